package tests

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
)

// Modes through the mount are those of a local file system: what a
// program creates gets the mode it asked for after its own umask (the
// kernel applies it before the request reaches the daemon), whatever the
// umask the daemon was started with, and a stat shows the real mode, 0000
// included. Every check compares with the same program run on a native
// directory of the same file system rather than with figures written down
// here, so the kernel's own rules (set-ID bits, symbolic links) decide.

// modeOf is the type and permission bits of path (not following a
// symbolic link), as ls -l would show them.
func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Lstat(path)
	must(t, err)
	return st.Mode()
}

// sameModes fails t for every name whose mode through the mount (and on
// SOURCE behind it) differs from the mode of the same name created
// natively, and for every native mode that is not the one in want.
func sameModes(t *testing.T, native, mnt, src string, want map[string]os.FileMode) {
	t.Helper()
	for name, w := range want {
		n := modeOf(t, filepath.Join(native, name))
		m := modeOf(t, filepath.Join(mnt, name))
		s := modeOf(t, filepath.Join(src, name))
		if w != 0 && n != w {
			t.Errorf("%s natively: %v, want %v", name, n, w)
		}
		if m != n || s != n {
			t.Errorf("%s: %v through the mount (%v on SOURCE), %v natively", name, m, s, n)
		}
	}
}

// userDir makes directory rel in SOURCE and in a native directory beside
// it on the same file system, both owned by the user of cred and open to
// it, and returns the native one.
func userDirs(t *testing.T, d *daemon, cred *syscall.Credential, rel string) (native string) {
	t.Helper()
	native = filepath.Join(filepath.Dir(d.src), "native", rel)
	for _, dir := range []string{d.srcPath(rel), native} {
		must(t, os.MkdirAll(dir, 0o755))
		must(t, os.Chown(dir, int(cred.Uid), int(cred.Gid)))
		openToAll(t, dir)
	}
	openToAll(t, d.mnt)
	return native
}

// runAsIn runs sh -c script as the user of cred in each of dirs (its
// working directory), failing t if it fails.
func runAsIn(t *testing.T, cred *syscall.Credential, script string, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		cmd := exec.Command("sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s in %s: %v: %s", script, dir, err, out)
		}
	}
}

// A user with umask 002 (a group sharing a scan tree) gets group write
// on what it creates through the mount, as it does natively, whether the
// daemon was started under umask 077 or 022 (a systemd service's
// default); and a mode of 0777 asked for under umask 0 stays 0777.
func TestPosixCreateModesIgnoreDaemonUmask(t *testing.T) {
	cred := otherUser(t)
	for _, mask := range []string{"077", "022"} {
		t.Run("daemon umask "+mask, func(t *testing.T) {
			d := mountUnder(t, scanDB(t, "scanA"), "umask "+mask, "--allow-other")
			native := userDirs(t, d, cred, "scanA/u")
			runAsIn(t, cred, `umask 002; echo data >file; mkdir dir; mkfifo fifo; mknod node p; ln -s file link`,
				native, d.path("scanA/u"))
			sameModes(t, native, d.path("scanA/u"), d.srcPath("scanA/u"), map[string]os.FileMode{
				"file": 0o664,
				"dir":  os.ModeDir | 0o775,
				"fifo": os.ModeNamedPipe | 0o664,
				"node": os.ModeNamedPipe | 0o664,
				"link": 0, // whatever Linux gives a symbolic link (0777)
			})

			// mkdir -m 0777 and a file created 0666 under umask 0.
			runAsIn(t, cred, `umask 0; mkdir -m 0777 open; : >shared`, native, d.path("scanA/u"))
			sameModes(t, native, d.path("scanA/u"), d.srcPath("scanA/u"), map[string]os.FileMode{
				"open":   os.ModeDir | 0o777,
				"shared": 0o666,
			})
		})
	}
}

// createSetID creates the files named in the arguments with the modes
// given after each name (octal), under umask 0, as open(2) with O_CREAT
// does: the way pjdfstest's "create NAME 04777" does it.
const createSetID = `
import os, sys
os.umask(0)
args = sys.argv[1:]
for name, mode in zip(args[::2], args[1::2]):
    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, int(mode, 8)))
`

// An unprivileged user creating files with set-user-ID and set-group-ID
// bits through a mount shared with --allow-other gets the bits that a
// native create gives it: the daemon creates the file as root and gives
// it to the user, and chown(2) clears those bits; they must come back. In
// a set-group-ID directory of a group the user is not in, the kernel
// drops the set-group-ID bit, natively and through the mount alike.
func TestPosixCreateSetIDAsOtherUser(t *testing.T) {
	cred := otherUser(t)
	d := mountUnder(t, scanDB(t, "scanA"), "umask 022", "--allow-other")
	native := userDirs(t, d, cred, "scanA/u")
	// A set-group-ID directory of root's group, writable by everybody.
	for _, dir := range []string{native, d.srcPath("scanA/u")} {
		must(t, os.Mkdir(filepath.Join(dir, "sgid"), 0o777))
		must(t, os.Chmod(filepath.Join(dir, "sgid"), os.ModeSetgid|0o777))
	}
	files := []string{"suid", "4777", "sgid-file", "2777", "both", "6777", "sgid/suid", "4777", "sgid/sgid-file", "2777", "sgid/both", "6777"}
	for _, dir := range []string{native, d.path("scanA/u")} {
		// /usr/bin: the pyenv shim in root's PATH is not usable by other users.
		cmd := exec.Command("/usr/bin/python3", append([]string{"-c", createSetID}, files...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("creating set-ID files in %s: %v: %s", dir, err, out)
		}
	}
	want := map[string]os.FileMode{}
	for i := 0; i < len(files); i += 2 {
		want[files[i]] = 0
	}
	// The kernel's rules, written down only to show that the comparison
	// covers both outcomes: kept in the user's own directory, the
	// set-group-ID bit dropped in a foreign set-group-ID directory.
	want["both"] = os.ModeSetuid | os.ModeSetgid | 0o777
	want["sgid/both"] = os.ModeSetuid | 0o777
	sameModes(t, native, d.path("scanA/u"), d.srcPath("scanA/u"), want)
	for name := range want {
		st, err := os.Stat(d.srcPath(filepath.Join("scanA/u", name)))
		must(t, err)
		if s := st.Sys().(*syscall.Stat_t); s.Uid != cred.Uid {
			t.Errorf("%s belongs to uid %d, not to its creator %d", name, s.Uid, cred.Uid)
		}
	}
}

// A file or directory of mode 0000 shows as 0000 through the mount (not
// as go-fuse's default 0644/0755), so that with --allow-other, where the
// kernel decides from the mode the mount reports, nobody but root may
// open what nobody may open on SOURCE. Creating a file with mode 0000
// through the mount works and shows 0000 too (pjdfstest's open/26.t).
func TestPosixNullPermissions(t *testing.T) {
	cred := otherUser(t)
	d := mountT(t, scanDB(t, "scanA"), "--allow-other")
	openToAll(t, d.mnt)
	must(t, os.WriteFile(d.srcPath("scanA/closed"), []byte("nobody reads this\n"), 0o644))
	must(t, os.Chmod(d.srcPath("scanA/closed"), 0))
	must(t, os.Mkdir(d.srcPath("scanA/closed-dir"), 0o755))
	must(t, os.WriteFile(d.srcPath("scanA/closed-dir/f"), []byte("x\n"), 0o644))
	must(t, os.Chmod(d.srcPath("scanA/closed-dir"), 0))
	run(t, "python3", "-c", `import os, sys; os.close(os.open(sys.argv[1], os.O_CREAT|os.O_EXCL|os.O_WRONLY, 0))`, d.path("scanA/created"))

	for name, want := range map[string]string{"closed": "0 regular file", "closed-dir": "0 directory", "created": "0 regular empty file"} {
		if got := strings.TrimSpace(run(t, "stat", "-c", "%a %F", d.path("scanA/"+name))); got != want {
			t.Errorf("stat %s through the mount: %q, want %q", name, got, want)
		}
	}
	for _, c := range [][]string{{"cat", d.path("scanA/closed")}, {"ls", d.path("scanA/closed-dir")}, {"cat", d.path("scanA/closed-dir/f")}} {
		out, err := runAs(cred, c[0], c[1:]...)
		if err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("other user: %s %s: %v: %q, want Permission denied", c[0], c[1], err, out)
		}
	}
	// Root still may, as on SOURCE.
	if got := run(t, "cat", d.path("scanA/closed")); got != "nobody reads this\n" {
		t.Errorf("root reading the 0000 file: %q", got)
	}
}

// posixACL encodes a POSIX ACL as the kernel's system.posix_acl_*
// attributes hold it: version 2, then (tag, permissions, id) entries in
// tag order.
func posixACL(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

// A default ACL on a SOURCE directory still decides the modes and the
// ACL of what is created in it through the mount, now that the daemon
// runs with umask 0: the same as natively, for a creator with umask 0
// (with another umask, FUSE applies it where natively the default ACL
// replaces it; the README says so).
func TestPosixDefaultACL(t *testing.T) {
	d := mountUnder(t, scanDB(t, "scanA"), "umask 022")
	native := filepath.Join(filepath.Dir(d.src), "native", "acl")
	const (
		userObj, group, groupObj, mask, other = 0x01, 0x08, 0x04, 0x10, 0x20
		undefined                             = 0xffffffff
	)
	acl := posixACL([3]uint32{userObj, 7, undefined}, [3]uint32{groupObj, 5, undefined},
		[3]uint32{group, 7, 100}, [3]uint32{mask, 7, undefined}, [3]uint32{other, 5, undefined})
	for _, dir := range []string{native, d.srcPath("scanA/acl")} {
		must(t, os.MkdirAll(dir, 0o755))
		if err := unix.Setxattr(dir, "system.posix_acl_default", acl, 0); err != nil {
			t.Skipf("no POSIX ACLs on %s: %v", dir, err)
		}
	}
	for _, dir := range []string{native, d.path("scanA/acl")} {
		run(t, "sh", "-c", `cd "$1" && umask 0 && : >file && mkdir dir && mkfifo fifo`, "sh", dir)
	}
	sameModes(t, native, d.path("scanA/acl"), d.srcPath("scanA/acl"), map[string]os.FileMode{
		"file": 0o664, // 0666 through user::rwx, mask::rwx, other::r-x
		"dir":  os.ModeDir | 0o775,
		"fifo": os.ModeNamedPipe | 0o664,
	})
	for _, name := range []string{"file", "dir", "fifo"} {
		buf := make([]byte, 256)
		n, err := unix.Getxattr(d.srcPath("scanA/acl/"+name), "system.posix_acl_access", buf)
		if err != nil {
			t.Errorf("%s created through the mount has no access ACL: %v", name, err)
			continue
		}
		nn, err := unix.Getxattr(filepath.Join(native, name), "system.posix_acl_access", buf[n:])
		must(t, err)
		if string(buf[:n]) != string(buf[n:n+nn]) {
			t.Errorf("%s: access ACL %x through the mount, %x natively", name, buf[:n], buf[n:n+nn])
		}
	}
}

// posixSkip lists the go-fuse POSIX checks that cannot apply to this
// mount, and why.
var posixSkip = map[string]string{
	// It expects two descriptors of one process to conflict, which only
	// go-fuse's forwarding to OFD locks on the backing files gives. The
	// mount leaves fcntl locks to the kernel (CAP_POSIX_LOCKS off), which
	// applies POSIX semantics: a process never conflicts with itself.
	"FcntlFlockLocksFile": "POSIX locks of one process do not conflict; the check expects OFD semantics",
}

// The plain file system behaviour is intact: go-fuse's own POSIX checks
// pass on the mount. Each check runs in a scan directory of its own, so
// that its opens take (and release) real scan locks; the test process is
// the client (the server is the separate scanlockfs process), a single
// owner, which the locks must never make wait on itself.
func TestPosix(t *testing.T) {
	// Not parallel: posixtest opens files without O_CLOEXEC, and a daemon
	// that another test starts meanwhile would inherit them, keeping this
	// mount busy and failing that test's descriptor-leak check.
	d := mountT(t, scanDB(t), "--timeout", "5s")
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkip[name]; ok {
				t.Skip(why)
			}
			dir := d.path("posix_" + name)
			must(t, os.Mkdir(dir, 0o755))
			posixtest.All[name](t, dir)
		})
	}
}
