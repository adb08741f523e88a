package lockmgr

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A request that RetryDeadlock tries again counts once in Stats: one
// deadlock for a real deadlock, however many refusals it took; nothing
// but its grant for one that resolved itself. A probe refused with
// ErrWouldBlock counts nothing.
func TestRetryDeadlockCountsOnce(t *testing.T) {
	m := newManager(t, t.TempDir())
	a, b := testOwner("a"), testOwner("b")
	aShared := mustAcquire(t, m, "s", Shared, a)
	bShared := mustAcquire(t, m, "s", Shared, b)
	stopUpgrade := upgradeWaiting(t, m, "s", a)
	retries := 0
	testHookDeadlockRetry = func() { retries++ }
	t.Cleanup(func() { testHookDeadlockRetry = nil })
	before := m.Stats()
	_, err := m.Acquire(context.Background(), "s", Exclusive, b, RetryDeadlock(30*time.Millisecond))
	if !errors.Is(err, ErrDeadlock) {
		t.Fatalf("real deadlock: %v, want ErrDeadlock", err)
	}
	after := m.Stats()
	if retries < 2 {
		t.Fatalf("%d retries: the test needs several refusals", retries)
	}
	if d := after.Deadlocks - before.Deadlocks; d != 1 {
		t.Errorf("one request refused after %d retries counted %d deadlocks, want 1", retries, d)
	}
	stopUpgrade()

	before = m.Stats()
	if _, err := m.TryAcquire("s", Exclusive, testOwner("c"), Probe()); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("probe of a held scan: %v, want ErrWouldBlock", err)
	}
	if _, err := m.TryAcquire("s", Exclusive, testOwner("c")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("try of a held scan: %v, want ErrWouldBlock", err)
	}
	if d := m.Stats().WouldBlock - before.WouldBlock; d != 1 {
		t.Errorf("a probe and a try counted %d refusals, want 1 (the try's)", d)
	}
	mustRelease(t, aShared)
	mustRelease(t, bShared)
}

// A deadline is not a cancellation: with CancelGrace it still applies at
// once (TestCancelGraceOption covers the cancellation itself).
func TestCancelGraceDeadlineAppliesAtOnce(t *testing.T) {
	m := newManager(t, t.TempDir())
	a, b := testOwner("a"), testOwner("b")
	held := mustAcquire(t, m, "s", Exclusive, a)
	defer held.Release()
	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(20*time.Millisecond))
	defer cancel()
	if _, err := m.Acquire(ctx, "s", Shared, b, CancelGrace(10*time.Second)); !errors.Is(err, ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Fatalf("deadline with a grace: %v after %v, want ErrTimeout at the deadline", err, time.Since(start))
	}
}

// upgradeWaiting queues an upgrade of owner's shared hold of id to
// exclusive; the returned function cancels it and waits until it ended.
func upgradeWaiting(t *testing.T, m *Manager, id string, owner Owner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		if l, err := m.Acquire(ctx, id, Exclusive, owner); err == nil {
			l.Release()
		}
	}()
	waitFor(t, "the upgrade queued", func() bool { return m.Stats().Waiters == 1 })
	return func() { cancel(); <-ended }
}
