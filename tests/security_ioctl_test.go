package tests

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// loopExt4 makes a small ext4 file system in a loop-mounted image (no
// metadata checksums, no journal: cheap) labelled label, and returns its
// mount point; it is unmounted at cleanup.
func loopExt4(t *testing.T, label string) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	mnt := filepath.Join(dir, "fs")
	must(t, os.Mkdir(mnt, 0o755))
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(16<<20))
	must(t, f.Close())
	run(t, "mkfs.ext4", "-q", "-O", "^metadata_csum,^has_journal", "-L", label, img)
	run(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() { run(t, "umount", mnt) })
	return mnt
}

// pyIoctl runs ioctls on a file as the caller and prints one line per
// ioctl: its name and "ok VALUE" or the errno name.
const pyIoctl = `
import errno, fcntl, os, struct, sys
path, flags = sys.argv[1], int(sys.argv[2])
fd = os.open(path, flags)
def run(name, req, arg):
    try:
        r = fcntl.ioctl(fd, req, arg)
        if isinstance(r, bytes) and len(r) == 8:
            r = struct.unpack("l", r)[0]
        elif isinstance(r, (bytes, bytearray)):
            r = r.rstrip(b"\0").decode(errors="replace") or "-"
        elif isinstance(arg, bytearray):
            r = arg.rstrip(b"\0").decode(errors="replace") or "-"
        print(name, "ok", r, flush=True)
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, str(e.errno)), flush=True)
for w in sys.argv[3:]:
    if w == "getfslabel":
        run(w, 0x81009431, bytearray(256))
    elif w == "setfslabel":
        run(w, 0x41009432, b"pwned".ljust(256, b"\0"))
    elif w == "getversion":
        run(w, 0x80087601, struct.pack("l", 0))
    elif w == "getflags":
        run(w, 0x80086601, struct.pack("l", 0))
`

// ioctls runs pyIoctl on path (opened with flags) as cred (nil: root) and
// returns name -> outcome.
func ioctls(t *testing.T, cred *syscall.Credential, path string, flags int, names ...string) map[string]string {
	t.Helper()
	p := startPy(t, "ioctl", cred, pyIoctl, append([]string{path, itoa(flags)}, names...)...)
	got := map[string]string{}
	for _, n := range names {
		f := p.expect(n)
		got[n] = strings.Join(f[1:], " ")
	}
	must(t, p.wait())
	return got
}

// A user who may read one file of the mount cannot run ioctls on the
// backing file system through it: every ioctl, on files and directories,
// gets ENOTTY, while the same read-only ioctls work on SOURCE itself, and
// the write ioctl of the report (FS_IOC_SETFSLABEL, which the user could
// not run on SOURCE) changes nothing. Before the fix the daemon ran them
// all on the backing descriptor as root.
func TestSecurityIoctlsDoNotReachSource(t *testing.T) {
	u := otherUser(t)
	fsMnt := loopExt4(t, "before")
	src := filepath.Join(fsMnt, "db")
	must(t, os.MkdirAll(filepath.Join(src, "scanA"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "scanA", "files.json"), []byte("files of scanA\n"), 0o644))
	d := mountT(t, src, "--allow-other")
	openToAll(t, d.mnt)
	openToAll(t, filepath.Join(src, "scanA", "files.json"))
	base := d.leakBaseline(t)

	all := []string{"getfslabel", "getversion", "getflags", "setfslabel"}
	reads := all[:3]
	// Natively, the read-only ioctls work for this user; the label
	// change is refused.
	native := ioctls(t, u, d.srcPath("scanA/files.json"), os.O_RDONLY, all...)
	for _, n := range reads {
		if !strings.HasPrefix(native[n], "ok") {
			t.Fatalf("native %s on SOURCE: %s, want it to work (the test would prove nothing)", n, native[n])
		}
	}
	if native["setfslabel"] != "EPERM" {
		t.Fatalf("native FS_IOC_SETFSLABEL by the user: %s, want EPERM", native["setfslabel"])
	}

	for _, c := range []struct {
		what  string
		path  string
		flags int
	}{
		{"file", d.path("scanA/files.json"), os.O_RDONLY},
		{"directory", d.path("scanA"), os.O_RDONLY | 0o200000},
		{"root directory", d.mnt, os.O_RDONLY | 0o200000},
		{"status view file", d.statusPath("status.json"), os.O_RDONLY},
		{"status view directory", d.path(".locks"), os.O_RDONLY | 0o200000},
	} {
		got := ioctls(t, u, c.path, c.flags, all...)
		for _, n := range all {
			if got[n] != "ENOTTY" {
				t.Errorf("%s through the mount on a %s: %s, want ENOTTY", n, c.what, got[n])
			}
		}
	}
	if got := ioctls(t, nil, d.srcPath("scanA/files.json"), os.O_RDONLY, "getfslabel"); got["getfslabel"] != "ok before" {
		t.Fatalf("SOURCE's label is now %q, want it unchanged (before)", got["getfslabel"])
	}
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}
