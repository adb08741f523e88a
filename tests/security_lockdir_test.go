package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"scanlockfs/mountcmd"
	"scanlockfs/scanstatus"
)

// Security of the shared lock directory (issue 17, items 3, 4, 7, 8).
// Under the README's setup for a tree shared by a group (SOURCE and
// SOURCE/.locks group-writable and setgid), every group member may
// create, replace and remove files in the lock directory and rename or
// replace the lock directory itself, while the daemon runs as root. What
// a member plants there must not make the daemon block, die, follow a
// link, remove a file that is not a lock file, merge two scans, or show
// another user file names that user may not list.

// sharedTree makes a scan database set up as the README says for a group:
// SOURCE and SOURCE/.locks mode 2775 with the group of cred, of which the
// other user is thus a member.
func sharedTree(t *testing.T, cred *syscall.Credential, scans ...string) string {
	t.Helper()
	src := scanDB(t, scans...)
	openToAll(t, src)
	must(t, os.Chown(src, 0, int(cred.Gid)))
	must(t, os.Chmod(src, 0o2775))
	locks := filepath.Join(src, ".locks")
	must(t, os.Mkdir(locks, 0o2775))
	must(t, os.Chown(locks, 0, int(cred.Gid)))
	must(t, os.Chmod(locks, 0o2775))
	return src
}

// mustRunAs runs a program as the other user and fails the test if it
// fails.
func mustRunAs(t *testing.T, cred *syscall.Credential, name string, args ...string) {
	t.Helper()
	if out, err := runAs(cred, name, args...); err != nil {
		t.Fatalf("as the other user: %s %q: %v: %s", name, args, err, out)
	}
}

// unblockFIFO opens the FIFO at path for reading and writing (which never
// blocks) and closes it: a reader blocked in open(2) on it goes on and
// reads end-of-file. Without the fix that is the daemon.
func unblockFIFO(path string) {
	if fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK, 0); err == nil {
		unix.Close(fd)
	}
}

// plantFIFO makes a FIFO at path as the user of cred, as an attacker
// would, and unblocks it at the end of the test (see unblockFIFO).
func plantFIFO(t *testing.T, cred *syscall.Credential, path string) {
	t.Helper()
	mustRunAs(t, cred, "mkfifo", "-m", "0664", path)
	t.Cleanup(func() { unblockFIFO(path) })
}

func TestSecurityLockDir(t *testing.T) {
	cred := otherUser(t)
	other := userOf(t, cred)

	// Item 3: a FIFO planted as a scan's .info. The daemon reads .info
	// after every flock it takes (plantdb's release) and for the status
	// view: it used to block in open(2), holding the scan, until SIGINT.
	t.Run("FIFO as .info", func(t *testing.T) {
		t.Parallel()
		src := sharedTree(t, cred, "scanA")
		info := filepath.Join(src, ".locks", "scanA.info")
		plantFIFO(t, cred, info)
		d := mountT(t, src, "--timeout", "2s")
		code, out, stderr := runCode(t, "cat", d.statusPath("scanA.info"))
		var doc scanstatus.InfoDoc
		if code == 0 {
			decodeStrict(t, "scanA.info", []byte(out), &doc)
		}
		if code != 0 || !strings.Contains(doc.InfoError, info) || !strings.Contains(doc.InfoError, "FIFO") {
			t.Fatalf("status view of scanA: exit %d, info_error %q %s", code, doc.InfoError, stderr)
		}
		if code, _, stderr := runCode(t, "cat", d.statusPath("status.json")); code != 0 {
			t.Fatalf("status.json: exit %d %s", code, stderr)
		}
		if code, out, stderr := runCode(t, binScanlockfs, "status", src, "scanA"); code != 0 || !strings.Contains(stderr, "FIFO") {
			t.Fatalf("scanlockfs status: exit %d\n%s%s", code, out, stderr)
		}
		if code, out, stderr := runCode(t, "cat", d.path("scanA/files.json")); code != 0 || out != "files of scanA\n" {
			t.Fatalf("reading scanA with a FIFO as its .info: exit %d %q %s", code, out, stderr)
		}
		// The .info of a hold of the daemon replaces the FIFO (a rename:
		// it is not opened).
		if e := openErrno(t, d.path("scanA/files.json"), "wn"); e != "ok" {
			t.Fatalf("writer after the reader: %s", e)
		}
	})

	// Item 3: a symbolic link to /dev/zero as .info: reading the status
	// view of the scan used to read without end (the daemon died out of
	// memory). A 10 MB .info is not read either.
	t.Run("endless or huge .info", func(t *testing.T) {
		t.Parallel()
		src := sharedTree(t, cred, "scanU", "scanH")
		mustRunAs(t, cred, "ln", "-s", "/dev/zero", filepath.Join(src, ".locks", "scanU.info"))
		big := filepath.Join(src, ".locks", "scanH.info")
		mustRunAs(t, cred, "sh", "-c", `printf '{"scan_id":"scanH","user":"x","pid":1,"note":"' > "$1"; head -c 10000000 /dev/zero | tr '\0' n >> "$1"; printf '"}' >> "$1"`, "sh", big)
		d := mountT(t, src)
		for scan, why := range map[string]string{"scanU": "symbolic link", "scanH": "larger than any lock info"} {
			code, out, stderr := runCode(t, "cat", d.statusPath(scan+".info"))
			var doc scanstatus.InfoDoc
			if code == 0 {
				decodeStrict(t, scan+".info", []byte(out), &doc)
			}
			if code != 0 || !strings.Contains(doc.InfoError, why) {
				t.Fatalf("status view of %s: exit %d, info_error %q, want %q; %s", scan, code, doc.InfoError, why, stderr)
			}
			if got := run(t, "cat", d.path(scan+"/files.json")); got != "files of "+scan+"\n" {
				t.Fatalf("reading %s: %q", scan, got)
			}
		}
		code, out, stderr := runCode(t, binScanlockfs, "status", src, "scanH")
		if code != 0 || len(out)+len(stderr) > 64<<10 {
			t.Fatalf("scanlockfs status with a 10 MB .info: exit %d, %d bytes of output", code, len(out)+len(stderr))
		}
	})

	// Item 4: SOURCE/.locks replaced by a symbolic link. The mount's
	// start used to delete *.lock and *.info files wherever it pointed,
	// as root, and create its lock files there. It refuses to start,
	// saying what to do; cleanup refuses too; nothing there changes.
	t.Run("symlinked lock directory", func(t *testing.T) {
		t.Parallel()
		src := sharedTree(t, cred, "scanA")
		target := t.TempDir()
		for name, content := range map[string]string{"Cargo.lock": "[[package]]\nname = \"x\"\n", "yarn.lock": "", "old.info": `{"scan_id":"old","pid":1}`} {
			must(t, os.WriteFile(filepath.Join(target, name), []byte(content), 0o644))
		}
		before := treeState(t, target, true, nil)
		must(t, os.Remove(filepath.Join(src, ".locks")))
		mustRunAs(t, cred, "ln", "-s", target, filepath.Join(src, ".locks"))
		code, stderr := mountFails(t, src)
		if code != mountcmd.ExitMount || !strings.Contains(stderr, filepath.Join(src, ".locks")) || !strings.Contains(stderr, "symbolic link") ||
			!strings.Contains(stderr, "real directory") {
			t.Errorf("mount on a symlinked lock directory: exit %d, %s", code, stderr)
		}
		if code, out, stderr := runCode(t, binScanlockfs, "cleanup", src); code == 0 || !strings.Contains(stderr, "symbolic link") {
			t.Errorf("cleanup on a symlinked lock directory: exit %d\n%s%s", code, out, stderr)
		}
		if diff := diffStates(before, treeState(t, target, true, nil)); diff != "" {
			t.Fatalf("files where the link points changed:\n%s", diff)
		}
	})

	// Item 4, while mounted: the other user moves the lock directory away
	// and puts a symbolic link in its place. Scans not opened yet fail
	// with EIO and a log line saying what is wrong; nothing is created or
	// removed where the link points.
	t.Run("lock directory swapped for a symlink", func(t *testing.T) {
		t.Parallel()
		src := sharedTree(t, cred, "scanA", "scanB")
		target := t.TempDir()
		must(t, os.WriteFile(filepath.Join(target, "scanB.lock"), []byte("precious\n"), 0o644))
		before := treeState(t, target, true, nil)
		d := mountT(t, src)
		run(t, "cat", d.path("scanA/files.json"))
		locks := filepath.Join(src, ".locks")
		mustRunAs(t, cred, "mv", locks, locks+".old")
		mustRunAs(t, cred, "ln", "-s", target, locks)
		if e := openErrno(t, d.path("scanB/files.json"), "w"); e != "EIO" {
			t.Fatalf("open in scanB through a symlinked lock directory: %s, want EIO", e)
		}
		d.waitLog(t, "level=error", locks, "symbolic link")
		if diff := diffStates(before, treeState(t, target, true, nil)); diff != "" {
			t.Fatalf("files where the link points changed:\n%s", diff)
		}
		// The fix the message gives brings the locks back.
		must(t, os.Remove(locks))
		must(t, os.Rename(locks+".old", locks))
		if e := openErrno(t, d.path("scanB/files.json"), "w"); e != "ok" {
			t.Fatalf("open in scanB once repaired: %s", e)
		}
	})

	// Item 8: a hard link makes two scans one lock, silently (a program
	// holding one scan then waits on itself for the other). Both names are
	// refused with EIO, the log names the path and the fix, and removing
	// the extra name repairs both scans.
	t.Run("hard-linked lock files", func(t *testing.T) {
		t.Parallel()
		src := sharedTree(t, cred, "scanX", "scanY")
		x, y := filepath.Join(src, ".locks", "scanX.lock"), filepath.Join(src, ".locks", "scanY.lock")
		mustRunAs(t, cred, "sh", "-c", `umask 002; : > "$1"; ln "$1" "$2"`, "sh", x, y)
		d := mountT(t, src, "--timeout", "2s")
		code, _, stderr := runCode(t, "cp", d.path("scanX/files.json"), d.path("scanY/g"))
		if code == 0 || !strings.Contains(stderr, "Input/output error") {
			t.Fatalf("cp between hard-linked scans: exit %d, %s", code, stderr)
		}
		d.waitLog(t, "level=error", "hard links", "remove this name")
		must(t, os.Remove(y))
		run(t, "cp", d.path("scanX/files.json"), d.path("scanY/g"))
		if b, err := os.ReadFile(d.srcPath("scanY/g")); err != nil || string(b) != "files of scanX\n" {
			t.Fatalf("copy once repaired: %q, %v", b, err)
		}
	})

	// Item 8: a FIFO as a lock file is refused as what it is (it was
	// reported as "is a directory"), without blocking.
	t.Run("FIFO as lock file", func(t *testing.T) {
		t.Parallel()
		src := sharedTree(t, cred, "scanF")
		lock := filepath.Join(src, ".locks", "scanF.lock")
		plantFIFO(t, cred, lock)
		d := mountT(t, src)
		if e := openErrno(t, d.path("scanF/files.json"), "r"); e != "EIO" {
			t.Fatalf("open in a scan whose lock file is a FIFO: %s, want EIO", e)
		}
		line := d.waitLog(t, "level=error", lock, "FIFO")
		if strings.Contains(line, "is a directory") {
			t.Fatalf("a FIFO reported as a directory: %s", line)
		}
		_, out, stderr := runCode(t, binScanlockfs, "status", src, "scanF")
		if !strings.Contains(out+stderr, "FIFO") {
			t.Fatalf("status does not say the lock file is a FIFO:\n%s%s", out, stderr)
		}
	})

	// Item 7: file names in a 0700 scan. The world-readable .info on
	// SOURCE holds no path at all; the status view shows the path to root
	// and hides it, saying so, from a user who may not list the scan.
	t.Run("paths only for those who may list them", func(t *testing.T) {
		t.Parallel()
		src := sharedTree(t, cred, "scanA", "scanB")
		must(t, os.Chmod(filepath.Join(src, "scanB"), 0o700))
		secret := "scanB/patient_4711_diagnosis.txt"
		must(t, os.WriteFile(filepath.Join(src, secret), []byte("x\n"), 0o600))
		d := mountT(t, src, "--allow-other")
		openToAll(t, d.mnt)
		holder := startClient(t, "root holder")
		holder.mustOpen("h", d.path(secret), "w")
		waitInfo(t, d.srcPath(".locks/scanB.info"), d.cmd.Process.Pid)
		if b, err := os.ReadFile(d.srcPath(".locks/scanB.info")); err != nil || strings.Contains(string(b), "patient_4711") || strings.Contains(string(b), `"note"`) {
			t.Errorf("SOURCE/.locks/scanB.info: %s, %v: a path in a world-readable file", b, err)
		}
		if doc := d.info(t, "scanB"); len(doc.Holders) != 1 || doc.Holders[0].Path != secret {
			t.Errorf("root's view of scanB: %+v", doc.Holders)
		}
		for _, name := range []string{"scanB.info", "status.json"} {
			out, err := runAs(cred, "cat", d.statusPath(name))
			if err != nil {
				t.Fatalf("other user reading %s: %v %s", name, err, out)
			}
			if strings.Contains(out, "patient_4711") || !strings.Contains(out, `"path_hidden": true`) {
				t.Errorf("other user's view of %s:\n%s", name, out)
			}
		}
		// Its own holds it sees.
		p := startPy(t, "other", cred, pyOpener)
		p.send("open o " + d.path("scanA/files.json") + " r")
		if r, _ := p.result("o"); r != "opened" {
			t.Fatalf("other user reading scanA: %s", r)
		}
		out, err := runAs(cred, "cat", d.statusPath("scanA.info"))
		if err != nil || !strings.Contains(out, `"path": "scanA/files.json"`) {
			t.Errorf("other user's view of its own hold: %v\n%s", err, out)
		}
		p.send("close o")
		p.result("o")
		holder.close("h")
	})

	// Item 7 and 8: the user an .info names is a claim (any group member
	// writes it). status shows the holder's real user as the user, and
	// the .info's as claimed.
	t.Run("claimed user", func(t *testing.T) {
		t.Parallel()
		src := sharedTree(t, cred, "scanC")
		lock, info := filepath.Join(src, ".locks", "scanC.lock"), filepath.Join(src, ".locks", "scanC.info")
		p := startPy(t, "forger", cred, `
import fcntl, json, os, sys, time
os.umask(0o002)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o664)
fcntl.flock(fd, fcntl.LOCK_EX)
with open(sys.argv[2], "w") as f:
    json.dump({"scan_id": "scanC", "lock_type": "exclusive", "user": "alice", "timestamp": time.time(), "pid": os.getpid(), "thread_id": 1}, f)
print("held", flush=True)
sys.stdin.readline()
`, lock, info)
		p.expect("held")
		code, out, stderr := runCode(t, binScanlockfs, "status", src, "scanC")
		if code != 0 || !strings.Contains(out, other+", alice (claimed)") {
			t.Errorf("status table of a forged .info: exit %d\n%s%s", code, out, stderr)
		}
		code, out, stderr = runCode(t, binScanlockfs, "status", "--json", src, "scanC")
		var doc struct {
			Scans []struct {
				Holders []struct {
					User        string `json:"user"`
					ClaimedUser string `json:"claimed_user"`
				} `json:"holders"`
			} `json:"scans"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Scans) != 1 || len(doc.Scans[0].Holders) != 1 ||
			doc.Scans[0].Holders[0].User != other || doc.Scans[0].Holders[0].ClaimedUser != "alice" {
			t.Errorf("status --json of a forged .info: exit %d\n%s%s", code, out, stderr)
		}
		p.send("")
	})
}

// userOf returns the name of the user of cred.
func userOf(t *testing.T, cred *syscall.Credential) string {
	t.Helper()
	return strings.TrimSpace(run(t, "id", "-nu", fmt.Sprint(cred.Uid)))
}

// Item 8: at the daemon's descriptor limit, an open that needs a lock
// file fails with EMFILE (it was EIO, with the hint "check the lock
// directory"), the log says to raise the limit, and close(2) of a file
// open through the mount succeeds (it returned EMFILE: go-fuse's flush
// dups the descriptor).
func TestSecurityDescriptorLimit(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	src := scanDB(t, "scanA", "scanB", "scanC", "scanD")
	for i := range 100 {
		must(t, os.WriteFile(filepath.Join(src, "scanA", fmt.Sprintf("f%03d", i)), nil, 0o644))
	}
	d := mountUnder(t, src, "ulimit -n 64")
	// Open files of scanA until the daemon has no descriptor left, then
	// open a file of scanB, scanC and scanD (their lock files must be
	// opened: a descriptor freed meanwhile goes to the first, whose lock
	// file stays open) and close one.
	p := startPy(t, "opener", nil, `
import errno, os, sys
fds = []
err = None
for i in range(100):
    try:
        fds.append(os.open(os.path.join(sys.argv[1], "scanA", "f%03d" % i), os.O_RDONLY))
    except OSError as e:
        err = e
        break
print("limit", len(fds), errno.errorcode.get(err.errno, str(err.errno)) if err else "none", flush=True)
for scan in ("scanB", "scanC", "scanD"):
    try:
        os.close(os.open(os.path.join(sys.argv[1], scan, "files.json"), os.O_RDONLY))
        print("scan", scan, "ok", flush=True)
    except OSError as e:
        print("scan", scan, errno.errorcode.get(e.errno, str(e.errno)), flush=True)
try:
    os.close(fds.pop())
    print("close ok", flush=True)
except OSError as e:
    print("close", errno.errorcode.get(e.errno, str(e.errno)), flush=True)
for fd in fds:
    os.close(fd)
`, d.mnt)
	if f := p.expect("limit"); f[2] != "EMFILE" {
		t.Fatalf("the daemon never ran out of descriptors: %q", f)
	}
	for range 3 {
		if f := p.expect("scan"); f[2] != "EMFILE" {
			t.Errorf("open in %s, which needs a lock file, at the descriptor limit: %s, want EMFILE", f[1], f[2])
		}
	}
	if f := p.expect("close"); f[1] != "ok" {
		t.Errorf("close(2) at the descriptor limit: %s, want success", f[1])
	}
	must(t, p.wait())
	// The log says what to do. (Which descriptor ran out first depends on
	// the operation: the lookup's descriptor of the directory, or the
	// lock file; either way the hint is the same.)
	if d.waitLog(t, "too many open files: raise LimitNOFILE"); strings.Contains(d.stderr.String(), "check the lock directory") {
		t.Errorf("daemon log at the descriptor limit:\n%s", d.stderr)
	}
}
