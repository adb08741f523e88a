package tests

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Security of a mount shared with other users (--allow-other, which
// turns on the kernel's default_permissions).
//
// The rule: a lock mode requires the matching permission on the file
// opened. The kernel checks permissions before an OPEN or CREATE reaches
// the daemon, so an open that fails with EACCES takes no lock: a user who
// may only read a scan's files can hold its shared lock (and so delay
// writers, as any reader does), never its exclusive one; a user who may
// not read a file cannot lock its scan through it at all. The lock
// directory is the lock manager's, writable only by the users (group) of
// the scan tree.

// otherUser creates an unprivileged system user for the test and removes
// it afterwards. Its processes run with its uid and gid and no
// supplementary group.
func otherUser(t *testing.T) *syscall.Credential {
	t.Helper()
	requireRoot(t)
	name := fmt.Sprintf("slt%d", os.Getpid()%1000000)
	if out, err := exec.Command("useradd", "-M", "-r", "-U", "-s", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
		_ = exec.Command("groupdel", name).Run() // if userdel left it
	})
	u, err := user.Lookup(name)
	must(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

// openToAll lets other users reach path: its parent directories up to
// the temporary directory get mode 0755 (t.TempDir makes them 0700).
func openToAll(t *testing.T, path string) {
	t.Helper()
	stop := filepath.Clean(os.TempDir())
	for p := filepath.Dir(path); len(p) > len(stop) && strings.HasPrefix(p, stop); p = filepath.Dir(p) {
		must(t, os.Chmod(p, 0o755))
	}
}

// wantedBy reports whether the daemon's debug log has a lock request
// from process pid: an OPEN that reached the lock manager. It proves an
// absence after the fact, which neither the status view (a refused
// request leaves no waiter) nor the metrics (not per process) can; the
// line is logged before the request goes to the lock manager. Where no
// other process of the mount takes locks meanwhile, lockRequests proves
// the same from the metrics.
func (d *daemon) wantedBy(pid int) bool {
	for _, l := range strings.Split(d.stderr.String(), "\n") {
		if strings.Contains(l, `msg="scan lock wanted"`) && strings.Contains(l+" ", fmt.Sprintf(" pid=%d ", pid)) {
			return true
		}
	}
	return false
}

// checkNeverLocked fails t if a refused open of process pid reached the
// mount's lock manager: the log has no request of pid, and the manager
// counts as many requests as before (requests, from lockRequests).
func (d *daemon) checkNeverLocked(t *testing.T, pid int, requests float64) {
	t.Helper()
	if d.wantedBy(pid) {
		t.Fatal("a refused open reached the lock manager")
	}
	if n := d.lockRequests(t); n != requests {
		t.Fatalf("the mount's lock manager had %v requests before the refused opens, %v after", requests, n)
	}
}

// pyHolds has p open rel through the mount with flags as id, checks that
// rel's scan is held in state (shared or exclusive) meanwhile, closes it
// and waits until the scan is free.
func (d *daemon) pyHolds(t *testing.T, p *pyProc, id, rel, flags, state string) {
	t.Helper()
	scan := strings.Split(rel, "/")[0]
	p.send("open " + id + " " + d.path(rel) + " " + flags)
	if r, _ := p.result(id); r != "opened" {
		t.Fatalf("other user opening %s with %s: %s", rel, flags, r)
	}
	if st := lockState(t, d.src, scan); st.State != state {
		t.Fatalf("%s %s while the other user has %s open with %s, want %s", scan, st.State, rel, flags, state)
	}
	p.send("close " + id)
	p.result(id)
	waitFree(t, d.src, scan)
}

// lockRequests counts the lock requests of the mount that reached its
// lock manager so far, from .locks/metrics: those granted, those refused
// and those waiting now.
func (d *daemon) lockRequests(t *testing.T) float64 {
	t.Helper()
	fams := d.metrics(t)
	n := metricValue(t, fams, "scanlockfs_lock_waiters")
	for _, mode := range []string{"shared", "exclusive"} {
		n += metricValue(t, fams, "scanlockfs_lock_grants_total", "mode", mode)
	}
	for _, m := range fams["scanlockfs_lock_refusals_total"].GetMetric() {
		n += m.GetCounter().GetValue()
	}
	return n
}

func TestSecurityOtherUser(t *testing.T) {
	cred := otherUser(t)

	// Without --allow-other the other user cannot use the mount at all.
	t.Run("no allow-other", func(t *testing.T) {
		t.Parallel()
		d := mountT(t, scanDB(t, "scanA"))
		openToAll(t, d.mnt)
		base := d.leakBaseline(t)
		p := startPy(t, "other", cred, pyOpener)
		p.send("open r " + d.path("scanA/files.json") + " r")
		if r, _ := p.result("r"); r != "EACCES" {
			t.Fatalf("other user's open without --allow-other: %s, want EACCES", r)
		}
		d.checkNoLeaks(t, base)
	})

	// Reading a 0600 file of another user fails at once, even while the
	// scan is held exclusively, and takes no lock; a file it may read
	// gives it the shared lock, as anybody.
	t.Run("no read without permission", func(t *testing.T) {
		t.Parallel()
		d := mountT(t, scanDB(t, "scanA"), "--allow-other", "--log-level", "debug")
		openToAll(t, d.mnt)
		base := d.leakBaseline(t)
		must(t, os.WriteFile(d.srcPath("scanA/secret"), []byte("root only\n"), 0o600))
		w := startClient(t, "root writer")
		w.mustOpen("w", d.path("scanA/files.json"), "w")
		requests := d.lockRequests(t)
		p := startPy(t, "other", cred, pyOpener)
		p.send("open s " + d.path("scanA/secret") + " r")
		r, at := p.result("s")
		closing := w.close("w")
		if r != "EACCES" || at > closing {
			t.Fatalf("other user reading a 0600 file under a writer: %s at %d (writer closed at %d), want EACCES at once", r, at, closing)
		}
		d.checkNeverLocked(t, p.pid(), requests)
		waitFree(t, d.src, "scanA")
		d.pyHolds(t, p, "r", "scanA/files.json", "r", "shared")
		d.checkNoLeaks(t, base)
	})

	// Opening for writing (or O_TRUNC, or creating) without write
	// permission fails at once, even while another process reads the
	// scan (an exclusive request would wait), takes no lock, and keeps
	// nobody out: non-blocking writers of root get the scan every time
	// while the other user keeps trying. Where it may write, it gets the
	// exclusive lock.
	t.Run("no exclusive lock without write permission", func(t *testing.T) {
		t.Parallel()
		d := mountT(t, scanDB(t, "scanA", "scanB"), "--allow-other", "--log-level", "debug")
		openToAll(t, d.mnt)
		base := d.leakBaseline(t)
		must(t, os.Chown(d.srcPath("scanB"), int(cred.Uid), int(cred.Gid)))
		reader := startClient(t, "root reader")
		reader.mustOpen("r", d.path("scanA/files.json"), "r")
		requests := d.lockRequests(t)
		p := startPy(t, "other", cred, pyOpener)
		for i, c := range []struct{ path, flags string }{
			{"scanA/files.json", "w"},
			{"scanA/files.json", "b"},
			{"scanA/files.json", "rt"},
			{"scanA/files.json", "wa"},
			{"scanA/new", "wc"},
		} {
			id := "x" + strconv.Itoa(i)
			p.send("open " + id + " " + d.path(c.path) + " " + c.flags)
			if r, _ := p.result(id); r != "EACCES" {
				t.Fatalf("other user opening %s with %s: %s, want EACCES at once", c.path, c.flags, r)
			}
		}
		reader.close("r")
		d.checkNeverLocked(t, p.pid(), requests)
		if _, err := os.Stat(d.srcPath("scanA/new")); !os.IsNotExist(err) {
			t.Fatalf("a refused create made a file: %v", err)
		}

		// The other user hammers scanA with refused writes while root's
		// non-blocking writers must get it every time.
		hammer := startPy(t, "hammer", cred, `
import os, sys
n = 0
while not os.path.exists(sys.argv[2]):
    try:
        os.close(os.open(sys.argv[1], os.O_RDWR))
        sys.exit("opened for writing without permission")
    except PermissionError:
        n += 1
print("refused", n, flush=True)
`, d.path("scanA/files.json"), filepath.Join(t.TempDir(), "stop"))
		stop := hammer.cmd.Args[len(hammer.cmd.Args)-1]
		root := startClient(t, "root writer")
		for i := range 200 {
			id := "w" + strconv.Itoa(i)
			root.open(id, d.path("scanA/files.json"), "wn")
			if r := root.result(id); r.kind != "ok" {
				t.Fatalf("root's non-blocking writer #%d while the other user's opens are refused: %s", i, r.errno)
			}
			root.close(id)
		}
		must(t, os.WriteFile(stop, nil, 0o644))
		if f := hammer.expect("refused"); atoi(t, f[1]) == 0 {
			t.Fatal("the other user's opens were never refused: the test proved nothing")
		}
		if d.wantedBy(hammer.pid()) {
			t.Fatal("a refused open reached the lock manager")
		}

		// Where it may write (its own directory), it holds the scan.
		d.pyHolds(t, p, "n", "scanB/mine", "wc", "exclusive")
		d.checkNoLeaks(t, base)
	})

	// The other user cannot write into the lock directory: not on
	// SOURCE (it is not in the scan tree's group), not through the mount
	// (the real one is not shown; .locks there is the read-only status
	// view).
	t.Run("no write into .locks", func(t *testing.T) {
		t.Parallel()
		d := mountT(t, scanDB(t, "scanA"), "--allow-other")
		openToAll(t, d.mnt)
		openToAll(t, d.src)
		base := d.leakBaseline(t)
		run(t, "cat", d.path("scanA/files.json"))
		// cat's RELEASE is asynchronous, and the daemon removes the .info
		// it wrote for a hold longer than the info delay only then: wait
		// until it is done, so that every change after the snapshot
		// (mtimes included) is the other user's.
		waitFree(t, d.src, "scanA")
		before := treeState(t, d.lockDir(), true, nil)
		p := startPy(t, "other", cred, pyOpener)
		for i, path := range []string{
			d.srcPath(".locks/evil.lock"),
			d.srcPath(".locks/scanA.lock"),
			d.srcPath(".locks/scanA.info"),
			d.path(".locks/evil"),
			d.path(".locks/status.json"),
			d.path(".locks/metrics"),
		} {
			id := "l" + strconv.Itoa(i)
			p.send("open " + id + " " + path + " wc")
			if r, _ := p.result(id); r != "EACCES" && r != "EROFS" && r != "EPERM" {
				t.Errorf("other user writing %s: %s, want a refusal", path, r)
			}
		}
		// The mount's .info and .lock files take plantdb's writes and
		// drop them: the lock directory stays as it was (checked below).
		for i, path := range []string{d.path(".locks/scanA.info"), d.path(".locks/scanA.lock")} {
			id := "p" + strconv.Itoa(i)
			p.send("open " + id + " " + path + " wc")
			if r, _ := p.result(id); r == "opened" {
				p.send("close " + id)
				p.result(id)
			}
		}
		if out, err := runAs(cred, "rm", "-f", d.srcPath(".locks/scanA.lock")); err == nil {
			t.Errorf("other user removed a lock file: %s", out)
		}
		if diff := diffStates(before, treeState(t, d.lockDir(), true, nil)); diff != "" {
			t.Fatalf("the other user changed the lock directory:\n%s", diff)
		}
		d.checkNoLeaks(t, base)
	})
}

// runAs runs a program as the user of cred.
func runAs(cred *syscall.Credential, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Lock files and the lock directory get the documented modes (02775 for
// the directory, 0664 for lock, info and gate files) whatever the umask
// of the daemon, so that every user of the scan tree can use them.
func TestSecurityLockFileModes(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountUnder(t, src, "umask 077", "--log-level", "debug")
	// The lock directory was created under umask 077; the mount itself
	// then clears the umask (fusefs.Mount), and the lock files must not
	// depend on that either: lockmgr gives every mode explicitly.

	// A writer of ours waits for a direct holder: the daemon takes the
	// gate, then the lock, and writes .info.
	run(t, "cat", d.path("scanA/files.json"))
	direct := startClient(t, "direct")
	direct.send("lock L %s scanA exclusive", src)
	if r := direct.result("L"); r.kind != "ok" {
		t.Fatalf("direct lock: %s", r.errno)
	}
	w := startClient(t, "writer")
	w.open("w", d.path("scanA/files.json"), "w")
	d.waitQueued(t, w.pid())
	direct.send("unlock L")
	direct.result("L")
	if r := w.result("w"); r.kind != "ok" {
		t.Fatalf("writer: %s", r.errno)
	}
	waitInfo(t, d.srcPath(".locks/scanA.info"), d.cmd.Process.Pid)

	want := map[string]os.FileMode{".locks": os.ModeDir | os.ModeSetgid | 0o775, ".locks/scanA.lock": 0o664, ".locks/scanA.info": 0o664}
	if _, err := os.Stat(d.srcPath(".locks/scanA.gate")); err == nil {
		want[".locks/scanA.gate"] = 0o664
	}
	for rel, mode := range want {
		st, err := os.Stat(d.srcPath(rel))
		must(t, err)
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", rel, st.Mode(), mode)
		}
	}
	w.close("w")
	waitFree(t, src, "scanA")
	d.stopNoLeaks(t)
}

// scanlockfs status prints scan ids, commands and paths that other users
// choose (a scan folder, a file name, a command line). Printed raw, their
// control characters would reach the terminal of whoever runs status
// (set its title, clear it, ...): they must come out escaped.
func TestSecurityStatusShowsNoControlCharacters(t *testing.T) {
	t.Parallel()
	evil := "evil\x1b]0;pwned\x07\x1b[2J"
	src := scanDB(t, evil)
	d := mountT(t, src)
	p := startPy(t, "holder", nil, "import os, sys; fd = os.open(os.fsencode(sys.argv[1]), os.O_WRONLY | os.O_CREAT); print('held', flush=True); sys.stdin.readline()",
		d.path(evil+"/"+evil))
	p.expect("held")
	for _, args := range [][]string{{"status", src}, {"status", src, evil}, {"status", "--json", src}} {
		code, out, stderr := runCode(t, binScanlockfs, args...)
		if code != 0 || !strings.Contains(out, "evil") {
			t.Fatalf("%q: exit %d\n%s%s", args, code, out, stderr)
		}
		for _, c := range []string{"\x1b", "\x07"} {
			if strings.Contains(out+stderr, c) {
				t.Errorf("%q prints a raw %q from a scan or file name:\n%q", args, c, out)
			}
		}
	}
	p.send("")
	must(t, p.wait())
}
