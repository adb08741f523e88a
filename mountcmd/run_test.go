package mountcmd

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
)

// These tests run the real binary ("scanlockfs" in PATH, see TestMain)
// where a script cannot express the timing: signals sent at a known point,
// and timestamps that prove a wait.

// newDB makes a scan database with one scan and returns its path.
func newDB(t *testing.T) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "db")
	must(t, os.MkdirAll(filepath.Join(db, "scan_001"), 0o755))
	return db
}

// holdScan runs `scanlockfs run` holding scan_001 in mode until the
// returned release func is called; it returns once the lock is held.
func holdScan(t *testing.T, db, mode string) (release func() int64) {
	t.Helper()
	dir := t.TempDir()
	held, rel, releasedAt := filepath.Join(dir, "held"), filepath.Join(dir, "release"), filepath.Join(dir, "released-at")
	c := exec.Command("scanlockfs", "run", mode, db, "scan_001", "--", "sh", "-c",
		`touch "$1"; while [ ! -e "$2" ]; do sleep 0.01; done; date +%s%N > "$3"`, "sh", held, rel, releasedAt)
	c.Stderr = os.Stderr
	p := startBg(t, c)
	waitForFile(t, held, p)
	return func() int64 {
		must(t, os.WriteFile(rel, nil, 0o644))
		waitExit(t, p, "holder")
		return readNanos(t, releasedAt)
	}
}

// heldDB is a new database whose scan_001 another run holds exclusively
// until the test ends, and the path of a file that a COMMAND that must
// not run would create.
func heldDB(t *testing.T) (db, ran string) {
	t.Helper()
	db = newDB(t)
	release := holdScan(t, db, "--exclusive")
	t.Cleanup(func() { release() })
	return db, filepath.Join(t.TempDir(), "ran")
}

func readNanos(t *testing.T, p string) int64 {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return testutil.MustInt64(t, strings.TrimSpace(string(b)))
}

// startLogged starts c with its stderr scanned line by line; lines
// carries them (closed at EOF), and everything is also kept in full.
func startLogged(t *testing.T, c *exec.Cmd) (*bgProc, <-chan string, *strings.Builder) {
	t.Helper()
	r, err := c.StderrPipe()
	must(t, err)
	var all strings.Builder
	lines := make(chan string, 100)
	p := startBg(t, c)
	go func() {
		defer close(lines)
		_ = testutil.ReadLines(io.TeeReader(r, &all), func(l string) { lines <- l })
	}()
	return p, lines, &all
}

// awaitLine waits for a line of stderr containing want.
func awaitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stderr ended without a line containing %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no line containing %q within 20s", want)
		}
	}
}

func exitCode(p *bgProc) int {
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// TestRunWaitsForHolder proves the wait with timestamps: the waiter says
// it waits (because its first, non-blocking try failed), and its COMMAND
// starts only after the holder's COMMAND has finished.
func TestRunWaitsForHolder(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	release := holdScan(t, db, "--exclusive")

	startedAt := filepath.Join(t.TempDir(), "started-at")
	c := exec.Command("scanlockfs", "run", "--shared", "--log-level", "info", db, "scan_001", "--",
		"sh", "-c", `date +%s%N > "$1"`, "sh", startedAt)
	p, lines, all := startLogged(t, c)
	awaitLine(t, lines, "waiting for the shared lock on scan scan_001: held exclusive by pid")
	if _, err := os.Stat(startedAt); err == nil {
		t.Fatal("the waiter's COMMAND ran while the scan was held")
	}
	releasedAt := release()
	waitExit(t, p, "waiter")
	if started := readNanos(t, startedAt); started < releasedAt {
		t.Fatalf("waiter's COMMAND started %v before the holder's COMMAND finished", time.Duration(releasedAt-started))
	}
	if !strings.Contains(all.String(), "scan lock granted") {
		t.Errorf("no grant logged:\n%s", all.String())
	}
}

// TestRunTimeoutWaits: --timeout makes run wait that long, not less, then
// exit 3 without running COMMAND.
func TestRunTimeoutWaits(t *testing.T) {
	t.Parallel()
	db, ran := heldDB(t)
	const timeout = 300 * time.Millisecond
	start := time.Now()
	out, code := runOut(exec.Command("scanlockfs", "run", "--shared", "--timeout", timeout.String(), db, "scan_001", "--", "touch", ran))
	waited := time.Since(start)
	if code != ExitTimeout {
		t.Fatalf("exit %d, want %d: %s", code, ExitTimeout, out)
	}
	if waited < timeout {
		t.Fatalf("gave up after %v, before the %v timeout", waited, timeout)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("COMMAND ran without the lock")
	}
}

// TestRunForwardsSignals sends each forwarded signal to scanlockfs and
// checks that COMMAND caught it (its trap picks the exit code) and that
// run exited with COMMAND's status.
func TestRunForwardsSignals(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	for i, sig := range forwardedSignals {
		s := sig.(syscall.Signal)
		name := strings.TrimPrefix(unix.SignalName(s), "SIG")
		t.Run(name, func(t *testing.T) {
			want := 100 + i
			ready := filepath.Join(t.TempDir(), "ready")
			// sh runs the trap as soon as the signal arrives while it is in
			// the wait builtin; the trap also stops the background sleep.
			script := fmt.Sprintf(`trap 'kill $! 2>/dev/null; exit %d' %s; sleep 600 & touch "$1"; wait $!; exit 99`, want, name)
			c := exec.Command("scanlockfs", "run", "-x", db, "scan_001", "--", "sh", "-c", script, "sh", ready)
			p := startBg(t, c)
			waitForFile(t, ready, p)
			must(t, c.Process.Signal(s))
			if !p.wait(20 * time.Second) {
				t.Fatalf("run did not exit after %v", s)
			}
			if got := exitCode(p); got != want {
				t.Fatalf("after %v: exit %d, want %d (COMMAND's trap)", s, got, want)
			}
		})
	}
}

// TestRunSignalKillsCommand: a forwarded signal that COMMAND does not
// catch kills it, and run reports 128+N like a shell; the lock is free
// afterwards.
func TestRunSignalKillsCommand(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	ready := filepath.Join(t.TempDir(), "ready")
	c := exec.Command("scanlockfs", "run", "-x", db, "scan_001", "--", "sh", "-c", `touch "$1"; exec sleep 600`, "sh", ready)
	p := startBg(t, c)
	waitForFile(t, ready, p)
	must(t, c.Process.Signal(syscall.SIGTERM))
	if !p.wait(20 * time.Second) {
		t.Fatal("run did not exit after SIGTERM")
	}
	if got, want := exitCode(p), 128+int(syscall.SIGTERM); got != want {
		t.Fatalf("exit %d, want %d", got, want)
	}
	if out, code := runOut(exec.Command("scanlockfs", "run", "-x", "-n", db, "scan_001", "--", "true")); code != 0 {
		t.Fatalf("scan still locked after run exited: %d %s", code, out)
	}
}

// TestRunInterruptedWhileWaiting: SIGINT during the wait for the lock ends
// run with 130, and COMMAND never starts.
func TestRunInterruptedWhileWaiting(t *testing.T) {
	t.Parallel()
	db, ran := heldDB(t)
	c := exec.Command("scanlockfs", "run", "--exclusive", "--timeout", "0", "--log-level", "info", db, "scan_001", "--", "touch", ran)
	p, lines, all := startLogged(t, c)
	awaitLine(t, lines, "waiting for the exclusive lock")
	must(t, c.Process.Signal(syscall.SIGINT))
	if !p.wait(20 * time.Second) {
		t.Fatal("run kept waiting after SIGINT")
	}
	if got, want := exitCode(p), 128+int(syscall.SIGINT); got != want {
		t.Fatalf("exit %d, want %d\n%s", got, want, all.String())
	}
	if !strings.Contains(all.String(), "interrupted by SIGINT while waiting for the exclusive lock on scan scan_001; touch was not started") {
		t.Errorf("no explanation on stderr:\n%s", all.String())
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("COMMAND ran after the wait was interrupted")
	}
}

func TestParseTimeout(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"30s": 30 * time.Second, "500ms": 500 * time.Millisecond, "0": 0, "2": 2 * time.Second, "0.25": 250 * time.Millisecond, "1m30s": 90 * time.Second,
	} {
		got, err := parseTimeout(in)
		if err != nil || got != want {
			t.Errorf("parseTimeout(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "-1s", "-3", "1e300"} {
		if _, err := parseTimeout(in); err == nil {
			t.Errorf("parseTimeout(%q) accepted", in)
		}
	}
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	if got, want := commandLine([]string{"sh", "-c", "echo hi", ""}), `sh -c "echo hi" ""`; got != want {
		t.Errorf("commandLine = %s, want %s", got, want)
	}
	if got := commandLine([]string{strings.Repeat("x", 300)}); len(got) != 203 || !strings.HasSuffix(got, "...") {
		t.Errorf("long command line not shortened: %d bytes", len(got))
	}
}
