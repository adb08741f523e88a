package tests

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The counters move by exactly what programs did: three cat (shared) and
// two appends (exclusive) add three and two grants and five waits and
// opens; reading the status view in between adds nothing, because it
// takes no lock; an open that times out adds one EBUSY and one timeout.
func TestStatusMetricsCountGrantsAndTimeouts(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--timeout", "300ms")
	f := d.path("scanA/files.json")
	before := d.metrics(t)
	for range 3 {
		run(t, "cat", f)
		run(t, "cat", d.statusPath("scanA.info"), d.statusPath("status.json"), d.statusPath("metrics"))
	}
	for range 2 {
		run(t, "sh", "-c", "echo more >> "+f)
	}
	after := d.metrics(t)
	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"scanlockfs_lock_grants_total", []string{"mode", "shared"}, 3},
		{"scanlockfs_lock_grants_total", []string{"mode", "exclusive"}, 2},
		{"scanlockfs_lock_wait_seconds", nil, 5},
		{"scanlockfs_opens_total", nil, 5},
		{"scanlockfs_lock_errno_total", []string{"errno", "EBUSY"}, 0},
	} {
		if got := metricValue(t, after, c.name, c.labels...) - metricValue(t, before, c.name, c.labels...); got != c.delta {
			t.Errorf("%s%q grew by %v, want %v", c.name, c.labels, got, c.delta)
		}
	}

	w := startClient(t, "writer")
	w.mustOpen("w", f, "w")
	code, stderr, _ := runErr(t, "cat", f)
	if code == 0 || !strings.Contains(strings.ToLower(stderr), syscall.EBUSY.Error()) {
		t.Fatalf("cat under a writer: exit %d, %q; want EBUSY", code, stderr)
	}
	fams := d.metrics(t)
	if got := metricValue(t, fams, "scanlockfs_lock_errno_total", "errno", "EBUSY"); got != 1 {
		t.Errorf("EBUSY returned %v times, want 1", got)
	}
	if got := metricValue(t, fams, "scanlockfs_lock_refusals_total", "reason", "timeout"); got != 1 {
		t.Errorf("%v timeouts, want 1", got)
	}
	if got := metricValue(t, fams, "scanlockfs_lock_holders"); got != 1 {
		t.Errorf("%v holders with one writer", got)
	}
	w.close("w")
	d.waitMetric(t, 0, "scanlockfs_lock_holders")
}

// EAGAIN (O_NONBLOCK), EINTR (a waiting cat interrupted) and EDEADLK
// (two readers upgrading) are each counted once, and the waiters gauge
// shows a queued request while it waits.
func TestStatusMetricsCountRefusals(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	f := d.path("scanA/files.json")
	a, b := startClient(t, "reader A"), startClient(t, "reader B")
	a.mustOpen("r", f, "r")
	b.mustOpen("r", f, "r")

	nb := startClient(t, "nonblocking writer")
	nb.open("w", f, "wn")
	if res := nb.result("w"); res.kind != "err" || res.errno != "EAGAIN" {
		t.Fatalf("O_NONBLOCK writer under readers: %+v", res)
	}

	cat := startProgram(t, "sh", "-c", "exec cat >> "+f)
	d.waitQueued(t, cat.cmd.Process.Pid)
	if got := metricValue(t, d.metrics(t), "scanlockfs_lock_waiters"); got != 1 {
		t.Errorf("waiters gauge %v with one queued writer", got)
	}
	must(t, cat.cmd.Process.Signal(os.Interrupt))
	select {
	case <-cat.done:
	case <-time.After(waitLimit):
		t.Fatal("the waiting shell did not return after SIGINT")
	}
	d.waitMetric(t, 1, "scanlockfs_lock_errno_total", "errno", "EINTR")
	d.waitMetric(t, 0, "scanlockfs_lock_waiters")

	a.open("w", f, "w")
	d.waitQueued(t, a.pid())
	b.open("w", f, "w")
	if res := b.result("w"); res.kind != "err" || res.errno != "EDEADLK" {
		t.Fatalf("second upgrade: %+v, want EDEADLK", res)
	}
	b.close("r")
	if res := a.result("w"); res.kind != "ok" {
		t.Fatalf("first upgrade: %+v", res)
	}
	fams := d.metrics(t)
	for errno, want := range map[string]float64{"EAGAIN": 1, "EINTR": 1, "EDEADLK": 1, "EBUSY": 0} {
		if got := metricValue(t, fams, "scanlockfs_lock_errno_total", "errno", errno); got != want {
			t.Errorf("%s returned %v times, want %v", errno, got, want)
		}
	}
	for reason, want := range map[string]float64{"would_block": 1, "cancelled": 1, "timeout": 0} {
		if got := metricValue(t, fams, "scanlockfs_lock_refusals_total", "reason", reason); got != want {
			t.Errorf("refusals for %s: %v, want %v", reason, got, want)
		}
	}
	// The mount retries an apparent deadlock for a moment (a RELEASE may be
	// late), and the lock manager counts every attempt it refused.
	if got := metricValue(t, fams, "scanlockfs_lock_refusals_total", "reason", "deadlock"); got < 1 {
		t.Errorf("refusals for deadlock: %v, want at least 1", got)
	}
}
