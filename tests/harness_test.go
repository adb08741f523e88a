package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
	"scanlockfs/tests/internal/leakcheck"
)

// waitLimit bounds every wait of the harness for something that must
// happen. Nothing should come near it; it only keeps a broken build from
// hanging the suite. It is generous: on a loaded machine (load 20 and
// more) starting python3 alone has taken over 20 s.
const waitLimit = time.Minute

// now is the system-wide monotonic clock, the one slclient reports.
var now = testutil.Now

// stamp parses a CLOCK_MONOTONIC nanosecond field a helper printed.
var stamp = testutil.MustInt64

// syncBuffer collects a process's output for the test to read.
type syncBuffer = testutil.Buffer

// scanDB makes a scan database: scans with a file each, and root files.
func scanDB(t testing.TB, scans ...string) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "db")
	must(t, os.MkdirAll(src, 0o755))
	must(t, os.WriteFile(filepath.Join(src, "romidb"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(src, "users.json"), []byte("{}\n"), 0o644))
	for _, s := range scans {
		must(t, os.MkdirAll(filepath.Join(src, s, "metadata"), 0o755))
		must(t, os.WriteFile(filepath.Join(src, s, "files.json"), []byte("files of "+s+"\n"), 0o644))
	}
	return src
}

// must fails t with err, if err is not nil.
var must = testutil.Must

// daemon is a running `scanlockfs mount`.
type daemon struct {
	t        testing.TB
	src, mnt string
	cmd      *exec.Cmd
	stdout   *syncBuffer
	stderr   *syncBuffer
	exited   chan struct{}
	waitErr  error
	// allowExit, when set, lets the test end the daemon itself (signal
	// tests) and check its exit status.
	allowExit bool
}

// mountT mounts src with `scanlockfs mount flags... src MNT` in a child
// process and waits for its readiness line. Cleanup unmounts (retrying
// while busy: release is asynchronous), waits for the daemon and fails
// the test if it exited with an error or left the mount behind.
func mountT(t testing.TB, src string, flags ...string) *daemon {
	t.Helper()
	return mountOn(t, src, mountPoint(t), flags...)
}

// mountOn is mountT on a given MOUNTPOINT (one that holds a dead mount,
// say); cleanup as for mountT.
func mountOn(t testing.TB, src, mnt string, flags ...string) *daemon {
	t.Helper()
	requireFUSE(t)
	d := startDaemon(t, src, mnt, flags...)
	d.waitReady(t)
	return d
}

// mountUnder is mountT for a daemon that a shell starts after running
// setup ("umask 077", "ulimit -n 64"), as a login shell, systemd (UMask=,
// LimitNOFILE=) or mount.fuse3 would; sh replaces itself with the daemon.
func mountUnder(t testing.TB, src, setup string, flags ...string) *daemon {
	t.Helper()
	requireFUSE(t)
	mnt := mountPoint(t)
	args := append([]string{"-c", setup + `; exec "$@"`, "sh", binScanlockfs, "mount"}, flags...)
	d := startCmd(t, exec.Command("sh", append(args, src, mnt)...), src, mnt)
	d.waitReady(t)
	return d
}

// mountFails starts `scanlockfs mount flags... src MNT` and returns its
// exit code and standard error once it exits; if it mounts instead, the
// test fails (and the mount is taken down).
func mountFails(t *testing.T, src string, flags ...string) (int, string) {
	t.Helper()
	requireFUSE(t)
	mnt := mountPoint(t)
	d := startDaemon(t, src, mnt, flags...)
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(5 * time.Millisecond) {
		select {
		case <-d.exited:
			return d.waitExit(t), d.stderr.String()
		default:
		}
		if d.stdout.String() == d.readyLine() || time.Now().After(deadline) {
			d.allowExit = true
			t.Cleanup(d.cleanup)
			t.Fatalf("scanlockfs mount did not refuse to start; stderr:\n%s", d.stderr)
		}
	}
}

// mountPoint makes an empty directory to mount on.
func mountPoint(t testing.TB) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	return mnt
}

// startDaemon starts `scanlockfs mount flags... src mnt`.
func startDaemon(t testing.TB, src, mnt string, flags ...string) *daemon {
	t.Helper()
	args := append([]string{"mount"}, flags...)
	return startCmd(t, exec.Command(binScanlockfs, append(args, src, mnt)...), src, mnt)
}

// startCmd starts cmd, a command that runs `scanlockfs mount ... src mnt`
// (under a shell that sets its umask or limits first, say).
func startCmd(t testing.TB, cmd *exec.Cmd, src, mnt string) *daemon {
	t.Helper()
	d := &daemon{t: t, src: src, mnt: mnt, cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	must(t, d.cmd.Start())
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	return d
}

// readyLine is what the daemon prints once it serves.
func (d *daemon) readyLine() string {
	return fmt.Sprintf("scanlockfs: mounted %s on %s\n", d.src, d.mnt)
}

// waitReady waits for the daemon's readiness line and registers the
// cleanup of mountT: unmount (retrying while busy), wait for the daemon,
// fail the test if it exited with an error or left the mount behind.
func (d *daemon) waitReady(t testing.TB) {
	t.Helper()
	d.waitReadyLine(t)
	t.Cleanup(d.cleanup)
}

// waitReadyLine waits for the daemon's readiness line.
func (d *daemon) waitReadyLine(t testing.TB) {
	t.Helper()
	line := d.readyLine()
	deadline := time.Now().Add(waitLimit)
	for d.stdout.String() != line {
		select {
		case <-d.exited:
			t.Fatalf("scanlockfs mount exited before it was ready: %v\nstdout: %s\nstderr: %s", d.waitErr, d.stdout, d.stderr)
		default:
		}
		if time.Now().After(deadline) || (d.stdout.String() != "" && !strings.HasPrefix(line, d.stdout.String())) {
			t.Fatalf("no readiness line %q; stdout %q\nstderr: %s", line, d.stdout, d.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// path returns the path of rel inside the mount.
func (d *daemon) path(rel string) string { return filepath.Join(d.mnt, rel) }

// srcPath returns the path of rel on SOURCE.
func (d *daemon) srcPath(rel string) string { return filepath.Join(d.src, rel) }

func (d *daemon) cleanup() {
	t := d.t
	if !d.allowExit {
		select {
		case <-d.exited:
			t.Errorf("scanlockfs mount exited during the test: %v\nstderr: %s", d.waitErr, d.stderr)
		default:
			if err := unmountRetry(d.mnt); err != nil {
				t.Errorf("unmount %s: %v", d.mnt, err)
				_ = d.cmd.Process.Kill()
			}
		}
	}
	select {
	case <-d.exited:
	case <-time.After(waitLimit):
		_ = d.cmd.Process.Kill()
		<-d.exited
		t.Errorf("scanlockfs mount did not exit after unmount\nstderr: %s", d.stderr)
	}
	if !d.allowExit && d.waitErr != nil {
		t.Errorf("scanlockfs mount: %v\nstderr: %s", d.waitErr, d.stderr)
	}
	if isMounted(d.mnt) {
		t.Errorf("%s is still mounted", d.mnt)
		detachMount(d.mnt)
	}
	if t.Failed() {
		t.Logf("daemon stderr:\n%s", d.stderr)
	}
}

// unmountRetry unmounts mnt as a user would, retrying while it is busy:
// the kernel releases files asynchronously after close(2).
func unmountRetry(mnt string) error {
	var err error
	var out []byte
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, err = exec.Command("fusermount3", "-u", mnt).CombinedOutput()
		if err == nil {
			return nil
		}
		if !bytes.Contains(out, []byte("busy")) {
			break
		}
	}
	return fmt.Errorf("%v: %s", err, out)
}

// detachMount unmounts mnt lazily (fusermount3 -u -z): a dead mount, or
// one left behind by a failed test.
func detachMount(mnt string) { _ = exec.Command("fusermount3", "-u", "-z", mnt).Run() }

// waitExit waits for the daemon to exit and returns its exit code.
func (d *daemon) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(waitLimit):
		t.Fatalf("scanlockfs mount did not exit\nstderr: %s", d.stderr)
	}
	var ee *exec.ExitError
	if errors.As(d.waitErr, &ee) {
		return ee.ExitCode()
	}
	if d.waitErr != nil {
		t.Fatalf("waiting for scanlockfs: %v", d.waitErr)
	}
	return 0
}

// stopAndCheck unmounts as a user would, expects a clean exit (0) and
// every want in the daemon's log (its final statistics line, say).
func (d *daemon) stopAndCheck(t *testing.T, wants ...string) {
	t.Helper()
	d.allowExit = true
	must(t, unmountRetry(d.mnt))
	if code := d.waitExit(t); code != 0 {
		t.Fatalf("scanlockfs mount exited with %d\nstderr: %s", code, d.stderr)
	}
	for _, w := range wants {
		if !strings.Contains(d.stderr.String(), w) {
			t.Errorf("daemon log lacks %q:\n%s", w, d.stderr)
		}
	}
}

// isMounted reports whether mnt is a mount point, from /proc/self/mountinfo.
// waitUnmounted waits until mnt is no mount point any more; why says
// after what, for the failure.
func waitUnmounted(t *testing.T, mnt, why string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for isMounted(mnt) {
		if time.Now().After(deadline) {
			t.Fatalf("%s not detached %s", mnt, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isMounted(mnt string) bool {
	ms, err := procfs.ReadMountinfo()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.MountPoint == mnt {
			return true
		}
	}
	return false
}

// lockState returns who holds scan right now, as another process sees
// it: the flocks in /proc/locks on SOURCE's lock file (the daemon's among
// them). A test process's Manager holds no lease of its own.
func lockState(t *testing.T, src, scan string) *lockmgr.ScanStatus {
	t.Helper()
	m, err := lockmgr.New(src, lockmgr.WithStaleCleanup(false))
	must(t, err)
	defer m.Close()
	st, err := m.Status(scan)
	must(t, err)
	return st
}

// waitFree polls until nobody holds scan (release is asynchronous).
func waitFree(t *testing.T, src, scan string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		st := lockState(t, src, scan)
		if st.State == "free" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("scan %s still %s: %+v", scan, st.State, st.Holders)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// blockedIn reports whether process pid sleeps in system call nr in one
// of its threads, from /proc/PID/task/*/syscall.
func blockedIn(pid int, nr int) bool { return procfs.BlockedIn(pid, nr) }

// waitQueued waits until process pid waits for a scan lock in the
// daemon's lock manager (a waiter of the mount in .locks/status.json)
// and sleeps in openat(2). Then its OPEN is queued in the lock manager:
// if the manager granted it, it would return at once. A test that then
// releases the scan and sees the open return only after the release has
// proven that the open waited.
//
// The status view lists a waiter only once its request is in the lock
// manager's queue; the debug line "scan lock wanted" that this helper
// read before is logged earlier, before the request is queued, and a
// test that released the scan in between saw the open granted at once.
func (d *daemon) waitQueued(t *testing.T, pid int) {
	t.Helper()
	d.waitWaiter(t, pid)
	waitBlockedInOpen(t, pid)
}

// waitWaiter polls .locks/status.json until process pid is a waiter of
// the mount on some scan, and returns that scan.
func (d *daemon) waitWaiter(t *testing.T, pid int) string {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		scan, err := d.waiterScan(pid)
		if scan != "" {
			return scan
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never waited for a scan lock of the mount %s (status.json: %v)", pid, d.mnt, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waiterScan returns the scan that process pid waits for through the
// mount, from .locks/status.json, or "" (with the reason the document
// could not be read, if that is why). It decodes only the keys it needs,
// so that keys added to the document do not break it.
func (d *daemon) waiterScan(pid int) (string, error) {
	b, err := os.ReadFile(filepath.Join(d.mnt, ".locks", "status.json"))
	if err != nil {
		return "", err
	}
	var doc struct {
		Scans []struct {
			ScanID  string `json:"scan_id"`
			Waiters []struct {
				PID   int    `json:"pid"`
				Where string `json:"where"`
			} `json:"waiters"`
		} `json:"scans"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return "", fmt.Errorf("%w: %s", err, b)
	}
	for _, s := range doc.Scans {
		for _, w := range s.Waiters {
			if w.PID == pid && w.Where == "mount" {
				return s.ScanID, nil
			}
		}
	}
	return "", nil
}

// waitBlockedInOpen waits until pid sleeps in openat(2): it has sent its
// OPEN (or CREATE) and the daemon holds it back.
func waitBlockedInOpen(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !blockedIn(pid, unix.SYS_OPENAT) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d never blocked in openat", pid)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// leakBaseline records what the daemon holds once it has served a
// request (the Go runtime opens its poller and go-fuse its readers on
// first use). Take it before the test's clients start.
func (d *daemon) leakBaseline(t *testing.T) *leakcheck.Snapshot {
	t.Helper()
	if _, err := os.ReadDir(d.mnt); err != nil {
		t.Fatalf("warming up the mount: %v", err)
	}
	s, err := leakcheck.Take(d.cmd.Process.Pid, d.lockDir(), d.metricsPath())
	must(t, err)
	return s
}

// checkNoLeaks waits until the daemon holds no lease and no waiter (no
// flock of its own on SOURCE, and the metrics' holders and waiters at 0
// where the mount has metrics), and its descriptors and goroutines are
// back to base; it fails the test with what is left otherwise. Release
// is asynchronous (close(2) returns before the kernel's RELEASE), hence
// the polling. Call it once the test's clients are gone.
func (d *daemon) checkNoLeaks(t *testing.T, base *leakcheck.Snapshot) {
	t.Helper()
	var leaks []string
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) {
		cur, err := leakcheck.Take(d.cmd.Process.Pid, d.lockDir(), d.metricsPath())
		must(t, err)
		if leaks = leakcheck.Leaks(base, cur); len(leaks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Fatalf("the daemon did not return to its baseline:\n  %s", strings.Join(leaks, "\n  "))
}

// stopNoLeaks unmounts and checks the daemon's last words: a clean exit,
// no lease or waiter left in its lock manager, and no panic, error or
// data race in its log.
func (d *daemon) stopNoLeaks(t *testing.T) {
	t.Helper()
	d.stopAndCheck(t, "holders_left=0", "waiters_left=0")
	checkDaemonLog(t, d.stderr.String())
}

// checkDaemonLog fails the test if a daemon log shows a panic, a data
// race or a fatal error.
func checkDaemonLog(t *testing.T, log string) {
	t.Helper()
	for _, bad := range []string{"panic", "DATA RACE", "level=fatal", "goroutine "} {
		if strings.Contains(log, bad) {
			t.Errorf("daemon log has %q:\n%s", bad, log)
		}
	}
}

func (d *daemon) lockDir() string { return filepath.Join(d.src, ".locks") }

// metricsPath is the mount's Prometheus metrics file; Take ignores it
// while the mount has none.
func (d *daemon) metricsPath() string { return filepath.Join(d.mnt, ".locks", "metrics") }
