package tests

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/lockmgr"
)

// Lock files in the mount: util-linux flock(1) on MNT/.locks/S.lock
// takes the scan's real lock in the daemon (fusefs/locksdir_lock.go).

// flockHolder is flock(1) running `sh -c 'echo held; read x || true'`: it holds
// its lock until release (or the end of the test).
type flockHolder struct {
	*program
	stdin io.WriteCloser
}

// startFlock runs flock args... sh -c 'echo held; read x || true' and waits
// until it prints "held" (it holds the lock).
func startFlock(t *testing.T, args ...string) *flockHolder {
	t.Helper()
	h := &flockHolder{program: newProgram("flock", append(args, "sh", "-c", "echo held; read x || true")...)}
	var err error
	h.stdin, err = h.cmd.StdinPipe()
	must(t, err)
	h.start(t)
	t.Cleanup(func() {
		h.stdin.Close()
		select {
		case <-h.done:
		case <-time.After(waitLimit):
		}
	})
	deadline := time.Now().Add(waitLimit)
	for h.out.String() != "held\n" {
		if !h.running() || time.Now().After(deadline) {
			t.Fatalf("flock %q never held its lock (%v): %s %s", args, h.waitErr, h.out.String(), h.err.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	return h
}

// release ends the holder's command, and so its lock, and waits for it;
// it returns the time just before.
func (h *flockHolder) release(t *testing.T) int64 {
	t.Helper()
	at := now()
	must(t, h.stdin.Close())
	h.wait(t)
	return at
}

// interruptWaiter sends SIGINT to w, a program waiting for a lock that
// h holds, and waits for it to end while h still holds.
func interruptWaiter(t *testing.T, w *program, h *flockHolder) {
	t.Helper()
	must(t, w.cmd.Process.Signal(os.Interrupt))
	select {
	case <-w.done:
	case <-time.After(waitLimit):
		// A waiter that cannot be interrupted cannot be killed either
		// until the lock comes: end the holder, so that the test fails
		// instead of hanging.
		h.release(t)
		t.Fatalf("%v did not end on SIGINT", w.cmd.Args)
	}
	if !h.running() {
		t.Fatal("the holder ended before the waiter did")
	}
}

// wantFlockExit runs flock(1) with args and fails the test (saying what
// the run was: what) unless it exits with want.
func wantFlockExit(t *testing.T, want int, what string, args ...string) {
	t.Helper()
	if code, _ := flockCode(t, args...); code != want {
		t.Fatalf("%s: flock %q exited %d, want %d", what, args, code, want)
	}
}

// flockCode runs flock(1) with args and returns its exit code and how
// long it ran.
func flockCode(t *testing.T, args ...string) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	code, _, stderr := runCode(t, "flock", args...)
	if code != 0 && code != 1 && !strings.Contains(strings.Join(args, " "), "-E") {
		t.Fatalf("flock %q: exit %d: %s", args, code, stderr)
	}
	return code, time.Since(start)
}

// holderPIDs returns the pids that hold scan through the mount with path.
func (d *daemon) holderPIDs(t *testing.T, scan, path string) []int {
	t.Helper()
	var pids []int
	for _, h := range d.info(t, scan).Holders {
		if h.Where == "mount" && h.Path == path {
			pids = append(pids, h.PID)
		}
	}
	return pids
}

// flock MNT/.locks/S.lock CMD holds S exclusively for CMD: SOURCE's lock
// file shows it, lockmgr on SOURCE cannot get S, the status view names
// flock's pid and the lock file, and a reader of the mount waits until
// CMD ends. Before lock files existed, flock failed with EROFS.
func TestFlockLockFileHoldsScan(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	h := startFlock(t, d.path(".locks/scanA.lock"))
	if st := lockState(t, d.src, "scanA"); st.State != "exclusive" {
		t.Fatalf("SOURCE's view of scanA under flock: %s", st.State)
	}
	if pids := d.holderPIDs(t, "scanA", ".locks/scanA.lock"); len(pids) != 1 || pids[0] != h.cmd.Process.Pid {
		t.Fatalf("holders of scanA through .locks/scanA.lock: %v, want flock's pid %d", pids, h.cmd.Process.Pid)
	}
	m, err := lockmgr.New(d.src, lockmgr.WithStaleCleanup(false))
	must(t, err)
	defer m.Close()
	if _, err := m.TryAcquire("scanA", lockmgr.Shared, lockmgr.ProcessOwner()); !errors.Is(err, lockmgr.ErrWouldBlock) {
		t.Fatalf("lockmgr on SOURCE while flock holds scanA: %v, want ErrWouldBlock", err)
	}

	c := startClient(t, "reader")
	c.open("r", d.path("scanA/files.json"), "r")
	d.waitQueued(t, c.pid())
	released := h.release(t)
	if r := c.result("r"); r.kind != "ok" || r.at < released {
		t.Fatalf("reader: %+v, want ok after flock released at %d", r, released)
	}
	c.close("r")
	waitFree(t, d.src, "scanA")
}

// flock -c runs its command under the scan's lock, and the command and
// its children act under it (the inherited-descriptor rule: they hold
// flock's descriptor on the lock file): they write and read the scan
// instead of waiting for flock until the timeout (EBUSY). Under -s two
// flock commands read the scan at once.
func TestFlockCommandUsesScan(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--timeout", "10s")
	lf, f := d.path(".locks/scanA.lock"), d.path("scanA/files.json")
	out := run(t, "flock", lf, "-c", "echo x > "+f+" && cat "+f+" | tee "+d.path("scanA/copy")+" >/dev/null && cat "+d.path("scanA/copy"))
	if out != "x\n" {
		t.Fatalf("flock -c output %q", out)
	}
	if b, _ := os.ReadFile(d.srcPath("scanA/copy")); string(b) != "x\n" {
		t.Fatalf("SOURCE's copy after flock -c: %q", b)
	}
	h := startFlock(t, "-s", lf)
	if out := run(t, "flock", "-s", lf, "-c", "cat "+f); out != "x\n" {
		t.Fatalf("flock -s -c under another shared flock: %q", out)
	}
	h.release(t)
	waitFree(t, d.src, "scanA")
}

// flock(1)'s modes on a lock file: -s holders share the scan; -n gives up
// at once with exit 1 (or -E's code) where it would wait; -w SECONDS
// gives up after that long; none of them leaves a waiter behind.
func TestFlockModes(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	lf := d.path(".locks/scanA.lock")
	h1 := startFlock(t, "-s", lf)
	h2 := startFlock(t, "-s", lf)
	if pids := d.holderPIDs(t, "scanA", ".locks/scanA.lock"); len(pids) != 2 {
		t.Fatalf("two flock -s: holders %v", pids)
	}
	wantFlockExit(t, 1, "flock -n (exclusive) under shared holders", "-n", lf, "true")
	wantFlockExit(t, 7, "flock -n -E 7 under shared holders", "-n", "-E", "7", lf, "true")
	wantFlockExit(t, 0, "flock -s -n under shared holders", "-s", "-n", lf, "true")
	const wait = 300 * time.Millisecond
	code, took := flockCode(t, "-w", "0.3", lf, "true")
	if code != 1 || took < wait {
		t.Fatalf("flock -w 0.3 under shared holders: exit %d after %v, want 1 after at least %v", code, took, wait)
	}
	// The request returned before flock exited: nothing is queued.
	if w := d.info(t, "scanA").Waiters; len(w) != 0 {
		t.Fatalf("waiters left after flock -n and -w: %+v", w)
	}
	h1.release(t)
	h2.release(t)
	waitFree(t, d.src, "scanA")
	wantFlockExit(t, 0, "flock -n on a free scan", "-n", lf, "true")
}

// Ctrl-C of a flock that waits for a lock file ends it, and nothing stays
// queued: once the holder leaves, the scan is free and a non-blocking
// exclusive flock gets it at once (a waiter left in the queue would come
// first).
func TestFlockInterruptedWaitLeavesNothingQueued(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	lf := d.path(".locks/scanA.lock")
	h := startFlock(t, lf)
	w := startProgram(t, "flock", lf, "true")
	if scan := d.waitWaiter(t, w.cmd.Process.Pid); scan != "scanA" {
		t.Fatalf("flock waits for %s", scan)
	}
	interruptWaiter(t, w, h)
	if ws := d.info(t, "scanA").Waiters; len(ws) != 0 {
		t.Fatalf("waiters after the interrupted flock: %+v", ws)
	}
	h.release(t)
	waitFree(t, d.src, "scanA")
	wantFlockExit(t, 0, "flock -n after the interrupted waiter; a waiter left behind?", "-n", lf, "true")
}

// pyFlockHold opens a lock file read-only, flocks it exclusively, says
// "held" and sleeps until killed.
const pyFlockHold = `
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(3600)
`

// A process killed with SIGKILL while it holds a lock file's flock frees
// the scan: the reader that waited gets the file.
func TestFlockKilledHolderFreesScan(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	p := startPy(t, "holder", nil, pyFlockHold, d.path(".locks/scanA.lock"))
	p.expect("held")
	cat := startProgram(t, "cat", d.path("scanA/files.json"))
	d.waitQueued(t, cat.cmd.Process.Pid)
	must(t, p.cmd.Process.Kill())
	if got := cat.wait(t); got != "files of scanA\n" {
		t.Fatalf("cat after the holder was killed: %q", got)
	}
	waitFree(t, d.src, "scanA")
}

// pyFlockTry opens a lock file and tries each mode without waiting,
// printing "open ok|ERRNO" then "MODE ok|ERRNO" for each mode.
const pyFlockTry = `
import errno, fcntl, os, sys
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
try:
    fd = os.open(sys.argv[1], os.O_RDONLY)
except OSError as e:
    print("open", name(e)); sys.exit(0)
print("open ok")
for mode, op in (("shared", fcntl.LOCK_SH), ("exclusive", fcntl.LOCK_EX)):
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        print(mode, "ok")
    except OSError as e:
        print(mode, name(e))
`

// A lock file's flock needs the permission matching its mode: another
// user who may read a scan gets its shared lock but not its exclusive one
// (EACCES), until the scan is theirs; one who may not read it cannot
// open its lock file.
func TestFlockLockFilePermissionPerMode(t *testing.T) {
	cred := otherUser(t)
	src := scanDB(t, "scanA", "scanB")
	must(t, os.Chmod(src+"/scanB", 0o700))
	d := mountT(t, src, "--allow-other")
	openToAll(t, d.mnt)
	openToAll(t, d.src)
	try := func(scan string) string {
		t.Helper()
		p := startPy(t, "other", cred, pyFlockTry, d.path(".locks/"+scan+".lock"))
		got := "open " + p.expect("open")[1]
		if got == "open ok" {
			got += " shared " + p.expect("shared")[1] + " exclusive " + p.expect("exclusive")[1]
		}
		must(t, p.wait())
		return got
	}
	if got := try("scanA"); got != "open ok shared ok exclusive EACCES" {
		t.Fatalf("other user on a scan it may read: %q", got)
	}
	if got := try("scanB"); got != "open EACCES" {
		t.Fatalf("other user on a scan it may not read: %q", got)
	}
	must(t, os.Chown(d.srcPath("scanA"), int(cred.Uid), int(cred.Gid)))
	if got := try("scanA"); got != "open ok shared ok exclusive ok" {
		t.Fatalf("other user on its own scan: %q", got)
	}
	waitFree(t, d.src, "scanA")
}

// flock(2) on a data file of the mount (forwarded to the daemon since the
// mount asks for flock on lock files) is the backing file's flock: SOURCE
// sees it, and a flock that waits for it ends on SIGINT while the holder
// still holds (a wait in flock(2) inside the daemon could not be
// interrupted).
func TestFlockDataFileWaitIsInterruptible(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	f := d.path("scanA/files.json")
	h := startFlock(t, f)
	wantFlockExit(t, 1, "flock -n on SOURCE's file under the mount's flock", "-n", d.srcPath("scanA/files.json"), "true")
	w := startProgram(t, "flock", f, "true")
	deadline := time.Now().Add(waitLimit)
	for !blockedIn(w.cmd.Process.Pid, unix.SYS_FLOCK) {
		if !w.running() || time.Now().After(deadline) {
			t.Fatalf("second flock never waited: %v %s", w.waitErr, w.err.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	interruptWaiter(t, w, h)
	var ee *exec.ExitError
	if !errors.As(w.waitErr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT {
		t.Fatalf("waiting flock ended with %v, want killed by SIGINT", w.waitErr)
	}
	h.release(t)
	wantFlockExit(t, 0, "flock -n on the data file once free", "-n", f, "true")
	waitFree(t, d.src, "scanA")
}

// flock(1) on a lock file of the mount against plantdb's protocol on
// SOURCE (the plantdb peer, and util-linux flock on SOURCE's lock file):
// a shared plantdb reader lets flock -s in and keeps flock -n out, a
// waiting flock gets the scan only once plantdb released it, and while
// flock holds the scan neither flock on SOURCE nor plantdb gets it.
func TestFlockAgainstSourcePeers(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	lf := d.path(".locks/scanA.lock")
	peer := startPython(t, "plantdb", nil, plantdbPeer(t), "serve", d.src, "scanA")
	peer.expect("ready")
	peer.send("acquire shared 20000")
	peer.expect("ok")
	// A plantdb reader's release unlinks the lock file, so the daemon
	// never shares a flock with one (README: Mixed use with plantdb).
	wantFlockExit(t, 1, "flock -s -n beside a plantdb reader", "-s", "-n", lf, "true")
	wantFlockExit(t, 1, "flock -n under a plantdb reader", "-n", lf, "true")
	w := startProgram(t, "flock", lf, "true")
	d.waitWaiter(t, w.cmd.Process.Pid)
	if !w.running() {
		t.Fatal("flock ended while plantdb held the scan")
	}
	peer.send("release")
	released := stamp(t, peer.expect("released")[1])
	w.wait(t)
	if w.end < released {
		t.Fatalf("flock ended at %d, before plantdb released at %d", w.end, released)
	}

	h := startFlock(t, lf)
	wantFlockExit(t, 1, "flock -n on SOURCE's lock file under the mount's flock", "-n", d.srcPath(".locks/scanA.lock"), "true")
	peer.send("acquire shared 300")
	peer.expect("timeout")
	h.release(t)
	peer.send("acquire exclusive 20000")
	peer.expect("ok")
	peer.send("release")
	peer.expect("released")
	peer.send("quit")
	must(t, peer.wait())
	waitFree(t, d.src, "scanA")
}
