package lockmgr

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

// result is the outcome of an Acquire run in the background.
type result struct {
	l   *Lease
	err error
	at  int64 // CLOCK_MONOTONIC after Acquire returned
}

// goAcquire starts Acquire in a goroutine and waits until the request is
// queued in m (visible in Status), so that the caller knows it waits.
func goAcquire(t *testing.T, m *Manager, ctx context.Context, id string, mode Mode, o Owner) <-chan result {
	t.Helper()
	before := queued(t, m, id)
	ch := make(chan result, 1)
	go func() {
		l, err := m.Acquire(ctx, id, mode, o)
		ch <- result{l, err, mono()}
	}()
	waitFor(t, o.Key+" queued", func() bool {
		select {
		case r := <-ch:
			ch <- r // granted or failed at once: not queued, let the caller see it
			return true
		default:
		}
		return queued(t, m, id) > before
	})
	return ch
}

// get waits for a background Acquire.
func get(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("Acquire did not return within 20 s")
	}
	return result{}
}

// pending fails the test if the background Acquire has returned.
func pending(t *testing.T, ch <-chan result, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s: returned (%v) while it should wait", what, r.err)
	default:
	}
}

func mustAcquire(t *testing.T, m *Manager, id string, mode Mode, o Owner) *Lease {
	t.Helper()
	l, err := m.TryAcquire(id, mode, o)
	if err != nil {
		t.Fatalf("TryAcquire(%s, %v, %s): %v", id, mode, o, err)
	}
	return l
}

func mustRelease(t *testing.T, l *Lease) int64 {
	t.Helper()
	at := mono()
	if err := l.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	return at
}

// TestTryAcquireWouldBlock: every conflicting pair of modes, held by
// another owner in this process or by another process.
func TestTryAcquireWouldBlock(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root)
	h := startHelper(t, root, "")
	for _, tt := range []struct {
		held, want Mode
		conflict   bool
	}{
		{Shared, Shared, false},
		{Shared, Exclusive, true},
		{Exclusive, Shared, true},
		{Exclusive, Exclusive, true},
	} {
		// In this process, another owner.
		l := mustAcquire(t, m, "s", tt.held, testOwner("holder"))
		l2, err := m.TryAcquire("s", tt.want, testOwner("other"))
		if tt.conflict != errors.Is(err, ErrWouldBlock) {
			t.Errorf("local %v held, TryAcquire %v: %v (conflict %v)", tt.held, tt.want, err, tt.conflict)
		}
		if err == nil {
			l2.Release()
		}
		l.Release()

		// Another process.
		h.ok("try s %s", tt.held)
		l2, err = m.TryAcquire("s", tt.want, testOwner("other"))
		if tt.conflict != errors.Is(err, ErrWouldBlock) {
			t.Errorf("process %v held, TryAcquire %v: %v (conflict %v)", tt.held, tt.want, err, tt.conflict)
		}
		if err == nil {
			l2.Release()
		}
		h.ok("release s")
	}
}

func TestDefaultTimeout(t *testing.T) {
	const timeout = 150 * time.Millisecond
	root := t.TempDir()
	m := newManager(t, root, WithTimeout(timeout))
	h := startHelper(t, root, "")
	for _, where := range []string{"local", "process"} {
		t.Run(where, func(t *testing.T) {
			if where == "local" {
				l := mustAcquire(t, m, "s", Exclusive, testOwner("holder"))
				defer l.Release()
			} else {
				h.ok("try s exclusive")
				defer h.ok("release s")
			}
			start := time.Now()
			_, err := m.Acquire(context.Background(), "s", Shared, testOwner("waiter"))
			waited := time.Since(start)
			if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Acquire = %v, want ErrTimeout wrapping context.DeadlineExceeded", err)
			}
			if waited < timeout {
				t.Errorf("gave up after %v, before the default timeout %v", waited, timeout)
			}
			// A deadline on the context wins over the default. (start is
			// taken before the deadline is set, so that waited cannot be
			// shorter than it.)
			start = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), timeout/3)
			defer cancel()
			_, err = m.Acquire(ctx, "s", Exclusive, testOwner("waiter"))
			waited = time.Since(start)
			if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Acquire with a deadline = %v, want ErrTimeout and DeadlineExceeded", err)
			}
			if waited < timeout/3 || waited >= timeout {
				t.Errorf("waited %v with a %v context deadline and a %v default", waited, timeout/3, timeout)
			}
		})
	}
	// A timed-out request leaves nothing behind: the scan is free again.
	if st := m.Stats(); st.Waiters != 0 || st.Timeouts != 4 {
		t.Errorf("stats after timeouts: %+v", st)
	}
	l := mustAcquire(t, m, "s", Exclusive, testOwner("after"))
	l.Release()
}

func TestContextCancel(t *testing.T) {
	m := newManager(t, "")
	l := mustAcquire(t, m, "s", Exclusive, testOwner("holder"))
	defer l.Release()
	ctx, cancel := context.WithCancel(context.Background())
	ch := goAcquire(t, m, ctx, "s", Shared, testOwner("waiter"))
	cancel()
	r := get(t, ch)
	if !errors.Is(r.err, context.Canceled) || errors.Is(r.err, ErrTimeout) {
		t.Fatalf("cancelled Acquire = %v, want context.Canceled (not ErrTimeout)", r.err)
	}
	if n := queued(t, m, "s"); n != 0 {
		t.Errorf("%d requests still queued after cancel", n)
	}
}

func TestReentrant(t *testing.T) {
	m := newManager(t, "")
	a, b := testOwner("a"), testOwner("b")

	// Exclusive then shared by the same owner: granted at once.
	ex := mustAcquire(t, m, "s", Exclusive, a)
	sh := mustAcquire(t, m, "s", Shared, a)
	ex2 := mustAcquire(t, m, "s", Exclusive, a)
	mustRelease(t, ex)
	mustRelease(t, ex2)
	// Still held (shared, by a): b cannot write, and may read only once a
	// has let go entirely, since a's flock stays exclusive.
	if _, err := m.TryAcquire("s", Exclusive, b); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("b's exclusive while a holds shared: %v", err)
	}
	mustRelease(t, sh)
	mustRelease(t, mustAcquire(t, m, "s", Exclusive, b))

	// Shared then shared by the same owner, while another reader holds
	// and another owner's exclusive request waits: reentrant requests do
	// not queue.
	sh1 := mustAcquire(t, m, "s", Shared, a)
	shc := mustAcquire(t, m, "s", Shared, testOwner("c"))
	w := goAcquire(t, m, context.Background(), "s", Exclusive, b)
	sh2, err := m.TryAcquire("s", Shared, a)
	if err != nil {
		t.Fatalf("reentrant shared behind a waiting writer: %v", err)
	}
	mustRelease(t, shc)
	mustRelease(t, sh1)
	pending(t, w, "b's exclusive while a still holds one shared lease")
	rel := mustRelease(t, sh2)
	r := get(t, w)
	if r.err != nil || r.at < rel {
		t.Fatalf("b's exclusive: %v (granted at %d, last release at %d)", r.err, r.at, rel)
	}
	r.l.Release()
}

func TestUpgrade(t *testing.T) {
	m := newManager(t, "")
	a, b := testOwner("a"), testOwner("b")

	// Sole holder: granted at once, and it excludes others.
	sh := mustAcquire(t, m, "s", Shared, a)
	ex, err := m.TryAcquire("s", Exclusive, a)
	if err != nil {
		t.Fatalf("upgrade by the sole holder: %v", err)
	}
	if _, err := m.TryAcquire("s", Shared, b); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("b's shared after a's upgrade: %v", err)
	}
	mustRelease(t, ex)
	mustRelease(t, sh)

	// With another reader: waits until that reader leaves.
	sha := mustAcquire(t, m, "s", Shared, a)
	shb := mustAcquire(t, m, "s", Shared, b)
	w := goAcquire(t, m, context.Background(), "s", Exclusive, a)
	pending(t, w, "upgrade while b reads")
	rel := mustRelease(t, shb)
	r := get(t, w)
	if r.err != nil || r.at < rel {
		t.Fatalf("upgrade after b left: %v (granted %d, b released %d)", r.err, r.at, rel)
	}
	mustRelease(t, r.l)
	mustRelease(t, sha)

	// The upgrader's own shared hold is released (by another goroutine of
	// the same owner) while it waits: it must not be admitted next to
	// b's hold, whose owner is now the only holder.
	sha = mustAcquire(t, m, "s", Shared, a)
	shb = mustAcquire(t, m, "s", Shared, b)
	w = goAcquire(t, m, context.Background(), "s", Exclusive, a)
	mustRelease(t, sha)
	time.Sleep(10 * time.Millisecond) // room for a wrong grant (the right outcome is to keep waiting)
	pending(t, w, "former upgrader while b reads")
	rel = mustRelease(t, shb)
	r = get(t, w)
	if r.err != nil || r.at < rel {
		t.Fatalf("former upgrader after b left: %v", r.err)
	}
	mustRelease(t, r.l)
}

// TestUpgradeAcrossProcesses: readers of other processes that keep the
// scan shared without a gap must not starve an upgrade either.
func TestUpgradeAcrossProcesses(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	m := newManager(t, root)
	for range 2 {
		startHelper(t, root, "").ok("share s 2 2000")
	}
	o := testOwner("upgrader")
	sh, err := m.Acquire(context.Background(), "s", Shared, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ex, err := m.Acquire(ctx, "s", Exclusive, o)
	if err != nil {
		t.Fatalf("upgrade while other processes keep reading: %v", err)
	}
	if got := flockHolders(t, m.lockPath("s")); len(got) != 1 || got[os.Getpid()] != Exclusive {
		t.Errorf("after the upgrade the lock file is held by %v", got)
	}
	mustRelease(t, ex)
	mustRelease(t, sh)
	// The upgrade's gate went away with its grant: a new reader elsewhere
	// gets in at once.
	startHelper(t, root, "").ok("try s shared")
}

func TestUpgradeDeadlock(t *testing.T) {
	m := newManager(t, "", WithTimeout(20*time.Second))
	a, b := testOwner("a"), testOwner("b")
	sha := mustAcquire(t, m, "s", Shared, a)
	shb := mustAcquire(t, m, "s", Shared, b)
	wa := goAcquire(t, m, context.Background(), "s", Exclusive, a)

	start := time.Now()
	_, err := m.Acquire(context.Background(), "s", Exclusive, b)
	if !errors.Is(err, ErrDeadlock) {
		t.Fatalf("second upgrade = %v, want ErrDeadlock", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("ErrDeadlock came after %v, not at once", d)
	}
	// The same owner asking twice is not a deadlock.
	wa2 := goAcquire(t, m, context.Background(), "s", Exclusive, a)
	pending(t, wa, "a's upgrade while b still reads")
	mustRelease(t, shb)
	for _, w := range []<-chan result{wa, wa2} {
		r := get(t, w)
		if r.err != nil {
			t.Fatalf("a's upgrade after b gave up: %v", r.err)
		}
		mustRelease(t, r.l)
	}
	mustRelease(t, sha)
	if st := m.Stats(); st.Deadlocks != 1 {
		t.Errorf("Deadlocks = %d, want 1", st.Deadlocks)
	}
}

// TestNoWriterStarvation: new readers from other owners queue behind a
// waiting writer, so a stream of overlapping readers cannot starve it.
func TestNoWriterStarvation(t *testing.T) {
	m := newManager(t, "")
	r1 := mustAcquire(t, m, "s", Shared, testOwner("r1"))
	w := goAcquire(t, m, context.Background(), "s", Exclusive, testOwner("w"))
	if _, err := m.TryAcquire("s", Shared, testOwner("r2")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("new reader while a writer waits: %v, want ErrWouldBlock", err)
	}
	r2 := goAcquire(t, m, context.Background(), "s", Shared, testOwner("r2"))
	// r1's own further reads are not held back (that would deadlock it).
	again := mustAcquire(t, m, "s", Shared, testOwner("r1"))
	mustRelease(t, again)
	pending(t, r2, "reader queued behind the writer")
	rel := mustRelease(t, r1)
	rw := get(t, w)
	if rw.err != nil || rw.at < rel {
		t.Fatalf("writer: %v", rw.err)
	}
	pending(t, r2, "reader while the writer holds")
	wrel := mustRelease(t, rw.l)
	rr := get(t, r2)
	if rr.err != nil || rr.at < wrel {
		t.Fatalf("reader after the writer: %v (granted %d, writer released %d)", rr.err, rr.at, wrel)
	}
	mustRelease(t, rr.l)
}

// TestFIFO: waiters are served in arrival order, readers in a row
// together.
func TestFIFO(t *testing.T) {
	m := newManager(t, "")
	h := mustAcquire(t, m, "s", Exclusive, testOwner("holder"))
	type req struct {
		key  string
		mode Mode
	}
	reqs := []req{{"w1", Exclusive}, {"r1", Shared}, {"r2", Shared}, {"w2", Exclusive}, {"r3", Shared}}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	release := make(chan struct{})
	for _, r := range reqs {
		before := queued(t, m, "s")
		wg.Go(func() {
			l, err := m.Acquire(context.Background(), "s", r.mode, testOwner(r.key))
			if err != nil {
				t.Errorf("%s: %v", r.key, err)
				return
			}
			mu.Lock()
			order = append(order, r.key)
			mu.Unlock()
			if r.mode == Shared {
				<-release // readers hold on so the ones granted together overlap
			}
			l.Release()
		})
		waitFor(t, r.key+" queued", func() bool { return queued(t, m, "s") > before })
	}
	mustRelease(t, h)
	// w1 alone, then r1 and r2 together, then w2 once they left, then r3.
	waitFor(t, "r1 and r2 granted", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 3 })
	close(release)
	wg.Wait()
	want := []string{"w1", "r1", "r2", "w2", "r3"}
	if order[1] == "r2" { // r1 and r2 were granted together, in any order
		order[1], order[2] = order[2], order[1]
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("grant order %v, want %v", order, want)
		}
	}
}

func TestDoubleRelease(t *testing.T) {
	m := newManager(t, "")
	a := mustAcquire(t, m, "s", Shared, testOwner("a"))
	b := mustAcquire(t, m, "s", Shared, testOwner("b"))
	mustRelease(t, a)
	if err := a.Release(); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("second Release = %v, want ErrNotHeld", err)
	}
	// The double release did not release b's hold.
	if _, err := m.TryAcquire("s", Exclusive, testOwner("c")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("exclusive while b still reads: %v", err)
	}
	mustRelease(t, b)
	var nilLease *Lease
	if err := nilLease.Release(); !errors.Is(err, ErrNotHeld) {
		t.Errorf("nil Release = %v", err)
	}
}

func TestClose(t *testing.T) {
	root := t.TempDir()
	m, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, root, "")
	held := mustAcquire(t, m, "local", Exclusive, testOwner("holder"))
	mustAcquire(t, m, "other", Shared, testOwner("reader"))
	waitLocal := goAcquire(t, m, context.Background(), "local", Shared, testOwner("waiter"))
	h.ok("try remote exclusive")
	waitRemote := goAcquire(t, m, context.Background(), "remote", Exclusive, testOwner("waiter"))

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan result{"local": waitLocal, "remote": waitRemote} {
		if r := get(t, ch); !errors.Is(r.err, ErrClosed) {
			t.Errorf("waiter on %s after Close: %v, want ErrClosed", name, r.err)
		}
	}
	// Everything is free for other processes.
	for _, id := range []string{"local", "other"} {
		h.ok("try %s exclusive", id)
	}
	if err := held.Release(); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Release after Close = %v, want ErrNotHeld", err)
	}
	if _, err := m.Acquire(context.Background(), "x", Shared, testOwner("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close = %v, want ErrClosed", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
