package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"scanlockfs/tests/internal/leakcheck"
)

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
