package lockmgr

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// CancelGrace: a request
// cancelled while it waits is still granted within the grace, and gives
// up with the cancellation after it.
func TestCancelGraceOption(t *testing.T) {
	m := newManager(t, t.TempDir())
	a, b := testOwner("a"), testOwner("b")
	held := mustAcquire(t, m, "s", Exclusive, a)
	ctx, cancel := context.WithCancel(context.Background())
	got := acquireReleased(ctx, m, "s", Shared, b, CancelGrace(10*time.Second))
	waitFor(t, "the request queued", func() bool { return m.Stats().Waiters == 1 })
	cancel()
	mustRelease(t, held) // after the cancellation: only the grace can grant it
	if err := <-got; err != nil {
		t.Fatalf("granted within the grace: %v", err)
	}

	held = mustAcquire(t, m, "s", Exclusive, a)
	defer held.Release()
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		for m.Stats().Waiters != 1 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, err := m.Acquire(ctx, "s", Shared, b, CancelGrace(30*time.Millisecond))
	if !errors.Is(err, context.Canceled) || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("cancelled for good: %v after %v, want context.Canceled after the grace", err, time.Since(start))
	}
}

// RetryDeadlock: an apparent upgrade deadlock that resolves itself (the
// other upgrader's shared hold is released, as FUSE RELEASE arrives late)
// is granted; a real one is refused with ErrDeadlock after the retry
// time, and without the option at once.
func TestRetryDeadlock(t *testing.T) {
	m := newManager(t, t.TempDir())
	a, b := testOwner("a"), testOwner("b")
	aShared := mustAcquire(t, m, "s", Shared, a)
	bShared := mustAcquire(t, m, "s", Shared, b)
	aUp := acquireReleased(context.Background(), m, "s", Exclusive, a)
	waitFor(t, "a's upgrade queued", func() bool { return m.Stats().Waiters == 1 })
	if _, err := m.Acquire(context.Background(), "s", Exclusive, b); !errors.Is(err, ErrDeadlock) {
		t.Fatalf("without RetryDeadlock: %v, want ErrDeadlock", err)
	}

	retried := make(chan struct{}, 100)
	testHookDeadlockRetry = func() { retried <- struct{}{} }
	t.Cleanup(func() { testHookDeadlockRetry = nil })
	bUp := acquireReleased(context.Background(), m, "s", Exclusive, b, RetryDeadlock(time.Minute))
	<-retried // b was refused once and waits to try again
	mustRelease(t, bShared)
	if err := <-aUp; err != nil {
		t.Fatalf("a's upgrade: %v", err)
	}
	mustRelease(t, aShared)
	if err := <-bUp; err != nil {
		t.Fatalf("b's request, retried once the deadlock went away: %v", err)
	}

	// A real deadlock stays one.
	aShared = mustAcquire(t, m, "s", Shared, a)
	bShared = mustAcquire(t, m, "s", Shared, b)
	aUp = acquireReleased(context.Background(), m, "s", Exclusive, a)
	waitFor(t, "a's upgrade queued", func() bool { return m.Stats().Waiters == 1 })
	start := time.Now()
	_, err := m.Acquire(context.Background(), "s", Exclusive, b, RetryDeadlock(50*time.Millisecond))
	if !errors.Is(err, ErrDeadlock) || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("real deadlock: %v after %v, want ErrDeadlock after the retry time", err, time.Since(start))
	}
	mustRelease(t, bShared)
	if err := <-aUp; err != nil {
		t.Fatal(err)
	}
	mustRelease(t, aShared)
}

// Holders and HeldBy answer who holds a scan in this manager, so that a
// caller needs no map of its own.
func TestHoldersAndHeldBy(t *testing.T) {
	m := newManager(t, t.TempDir())
	a := Owner{User: "u", Key: "a", PID: 10, Note: "first"}
	b := Owner{User: "u", Key: "b", PID: 11}
	if hs := m.Holders("s"); len(hs) != 0 {
		t.Fatalf("holders of a free scan: %v", hs)
	}
	if others, self := m.HeldBy("s", "a"); others || self {
		t.Fatalf("free scan: others %v self %v", others, self)
	}
	l1 := mustAcquire(t, m, "s", Shared, a)
	again := a
	again.Note = "second"
	l2 := mustAcquire(t, m, "s", Shared, again)
	if others, self := m.HeldBy("s", "a"); others || !self {
		t.Fatalf("held by a only: others %v self %v", others, self)
	}
	if others, self := m.HeldBy("s", "b"); !others || self {
		t.Fatalf("asked as b: others %v self %v", others, self)
	}
	l3 := mustAcquire(t, m, "s", Shared, b)
	hs := m.Holders("s")
	slices.SortFunc(hs, func(x, y Owner) int { return strings.Compare(x.Key, y.Key) })
	if len(hs) != 2 || hs[0] != a || hs[1] != b {
		t.Fatalf("holders %v, want a (as first granted) and b", hs)
	}
	if others, self := m.HeldBy("s", "a"); !others || !self {
		t.Fatalf("held by a and b: others %v self %v", others, self)
	}
	mustRelease(t, l1)
	mustRelease(t, l3)
	if others, self := m.HeldBy("s", "a"); others || !self {
		t.Fatalf("a still holds its second lease: others %v self %v", others, self)
	}
	mustRelease(t, l2)
	if hs := m.Holders("s"); len(hs) != 0 {
		t.Fatalf("holders after the last release: %v", hs)
	}
}

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
