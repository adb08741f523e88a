package lockmgr

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// The scheduler's own tests: no files, no Manager. fakeBackend stands for
// other processes (or hosts): a scan can be "held elsewhere", and it
// records what the scheduler asked of it, which proves the seam.

type fakeBackend struct {
	mu    sync.Mutex
	scans map[string]*fakeScan
}

type fakeScan struct {
	id string

	mu        sync.Mutex
	held      Mode          // what "this process" holds
	elsewhere chan struct{} // non-nil: another process holds the scan until it is closed
	writer    bool          // a writer elsewhere waits
	calls     []string      // "lock shared->exclusive", "unlock"
	unlocking chan struct{} // non-nil: unlock waits until it is closed
	users     int
}

func newFakeBackend() *fakeBackend { return &fakeBackend{scans: map[string]*fakeScan{}} }

// schedAcquireReleased runs a blocking schedAcquire in a goroutine; the
// channel gets its error, or nil once granted (the lease released at once).
func schedAcquireReleased(sc *scheduler, id string, mode Mode, o Owner) <-chan error {
	got := make(chan error, 1)
	go func() {
		l, err := schedAcquire(context.Background(), sc, id, mode, o, false)
		if err == nil {
			l.Release()
		}
		got <- err
	}()
	return got
}

// wantCalls fails t unless the backend calls for scan id were want.
func (b *fakeBackend) wantCalls(t *testing.T, id string, want ...string) {
	t.Helper()
	if _, calls, _ := b.scan(id).snapshot(); !slices.Equal(calls, want) {
		t.Fatalf("backend calls %v, want %v", calls, want)
	}
}

func (b *fakeBackend) scan(id string) *fakeScan {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.scans[id]
	if f == nil {
		f = &fakeScan{id: id}
		b.scans[id] = f
	}
	return f
}

func (b *fakeBackend) open(id string) backendScan {
	f := b.scan(id)
	f.mu.Lock()
	f.users++
	f.mu.Unlock()
	return f
}
func (b *fakeBackend) shutdown() {}
func (b *fakeBackend) close()    {}

func (f *fakeScan) lock(ctx context.Context, req holdRequest) (Mode, error) {
	f.mu.Lock()
	f.calls = append(f.calls, "lock "+req.from.String()+"->"+req.to.String())
	if req.from != f.held {
		f.mu.Unlock()
		panic("scheduler's idea of the hold differs from the backend's: " + req.from.String() + " vs " + f.held.String())
	}
	for f.elsewhere != nil {
		if req.try {
			held := f.held
			f.mu.Unlock()
			return held, ErrWouldBlock
		}
		ch := f.elsewhere
		f.mu.Unlock()
		var tick <-chan time.Time
		if req.orphaned != nil && f.held == Shared {
			tick = time.After(time.Millisecond)
		}
		select {
		case <-ch:
		case <-tick:
			if req.orphaned() {
				f.mu.Lock()
				f.calls = append(f.calls, "orphan dropped")
				f.held = 0
				f.mu.Unlock()
			}
		case <-ctx.Done():
			held, _, _ := f.snapshot()
			return held, ctx.Err()
		}
		f.mu.Lock()
	}
	f.held = req.to
	f.mu.Unlock()
	return req.to, nil
}

func (f *fakeScan) unlock() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "unlock")
	if ch := f.unlocking; ch != nil {
		f.mu.Unlock()
		<-ch
		f.mu.Lock()
	}
	f.held = 0
}

func (f *fakeScan) writerWaiting() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writer
}

func (f *fakeScan) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users--
}

func (f *fakeScan) snapshot() (Mode, []string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held, slices.Clone(f.calls), f.users
}

// holdElsewhere makes another process hold the scan until the returned
// function is called.
func (f *fakeScan) holdElsewhere() func() {
	ch := make(chan struct{})
	f.mu.Lock()
	f.elsewhere = ch
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.elsewhere = nil
		f.mu.Unlock()
		close(ch)
	}
}

func newTestScheduler(timeout time.Duration) (*scheduler, *fakeBackend) {
	b := newFakeBackend()
	l := logrus.New()
	l.SetOutput(io.Discard)
	return newScheduler(b, timeout, l, false), b
}

func schedAcquire(ctx context.Context, sc *scheduler, id string, mode Mode, o Owner, try bool) (*Lease, error) {
	start := time.Now()
	wc := sc.waitContext(ctx, try, start, 0)
	defer wc.stop()
	return sc.acquire(wc, id, mode, o, try, false, start)
}

func mustSched(t *testing.T, sc *scheduler, id string, mode Mode, o Owner) *Lease {
	t.Helper()
	l, err := schedAcquire(context.Background(), sc, id, mode, o, false)
	if err != nil {
		t.Fatalf("%s %s: %v", o.Key, mode, err)
	}
	return l
}

func waiters(sc *scheduler) int {
	_, _, w := sc.counts()
	return w
}

// waitInOrder starts one request per owner, each queued before the next
// starts; each releases at once. The returned function waits until all
// are done and returns the owners in grant order (errors as "error ...").
func waitInOrder(t *testing.T, sc *scheduler, id string, reqs []Owner, modes []Mode) func() []string {
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	for i, o := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := schedAcquire(context.Background(), sc, id, modes[i], o, false)
			mu.Lock()
			if err != nil {
				order = append(order, "error "+err.Error())
			} else {
				order = append(order, o.Key)
			}
			mu.Unlock()
			if err == nil {
				l.Release()
			}
		}()
		waitFor(t, o.Key+" queued", func() bool { return waiters(sc) == i+1 })
	}
	return func() []string {
		wg.Wait()
		return order
	}
}

func TestSchedFIFO(t *testing.T) {
	sc, b := newTestScheduler(0)
	a := mustSched(t, sc, "s", Exclusive, testOwner("a"))
	order := waitInOrder(t, sc, "s",
		[]Owner{testOwner("w1"), testOwner("r"), testOwner("w2")},
		[]Mode{Exclusive, Shared, Exclusive})
	a.Release()
	got := order()
	if want := []string{"w1", "r", "w2"}; !slices.Equal(got, want) {
		t.Fatalf("grant order %v, want %v", got, want)
	}
	held, calls, users := b.scan("s").snapshot()
	if held != 0 || users != 0 || len(calls) == 0 || calls[len(calls)-1] != "unlock" {
		t.Fatalf("backend after the last release: held %v, users %d, calls %v", held, users, calls)
	}
}

// A reader arriving while a writer waits queues behind it, although the
// scan is held shared; an owner's reentrant request does not.
func TestSchedWriterPriority(t *testing.T) {
	sc, b := newTestScheduler(0)
	r1 := mustSched(t, sc, "s", Shared, testOwner("r1"))
	order := waitInOrder(t, sc, "s", []Owner{testOwner("w")}, []Mode{Exclusive})
	if _, err := schedAcquire(context.Background(), sc, "s", Shared, testOwner("r2"), true); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("new reader while a writer waits: %v, want ErrWouldBlock", err)
	}
	again := mustSched(t, sc, "s", Shared, testOwner("r1"))
	again.Release()
	r1.Release()
	if got := order(); !slices.Equal(got, []string{"w"}) {
		t.Fatal(got)
	}
	// One hold for the two leases of r1: a reentrant grant needs no backend.
	b.wantCalls(t, "s", "lock none->shared", "unlock", "lock none->exclusive", "unlock")
}

// An upgrade waits for the other reader, then converts the process's
// hold; a second upgrader of the same scan gets ErrDeadlock at once.
func TestSchedUpgradeAndDeadlock(t *testing.T) {
	sc, b := newTestScheduler(0)
	a := mustSched(t, sc, "s", Shared, testOwner("a"))
	bl := mustSched(t, sc, "s", Shared, testOwner("b"))
	order := waitInOrder(t, sc, "s", []Owner{testOwner("a")}, []Mode{Exclusive})
	if _, err := schedAcquire(context.Background(), sc, "s", Exclusive, testOwner("b"), false); !errors.Is(err, ErrDeadlock) {
		t.Fatalf("second upgrader: %v, want ErrDeadlock", err)
	}
	bl.Release()
	if got := order(); !slices.Equal(got, []string{"a"}) {
		t.Fatal(got)
	}
	a.Release()
	b.wantCalls(t, "s", "lock none->shared", "lock shared->exclusive", "unlock")
}

// Waits end with the context: its deadline, the scheduler's default
// timeout, or a cancellation; in the queue or in the backend, and the
// request leaves nothing behind.
func TestSchedTimeoutAndCancel(t *testing.T) {
	sc, b := newTestScheduler(30 * time.Millisecond)
	a := mustSched(t, sc, "s", Exclusive, testOwner("a"))
	if _, err := schedAcquire(context.Background(), sc, "s", Shared, testOwner("b"), false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("default timeout in the queue: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for waiters(sc) != 1 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := schedAcquire(ctx, sc, "s", Shared, testOwner("b"), false); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled in the queue: %v", err)
	}
	a.Release()

	// Held by another process: the wait is in the backend.
	release := b.scan("s").holdElsewhere()
	if _, err := schedAcquire(context.Background(), sc, "s", Exclusive, testOwner("b"), false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("default timeout in the backend: %v", err)
	}
	if _, err := schedAcquire(context.Background(), sc, "s", Shared, testOwner("b"), true); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("try while held elsewhere: %v", err)
	}
	got := schedAcquireReleased(sc, "s", Exclusive, testOwner("c"))
	waitFor(t, "c waits in the backend", func() bool { return waiters(sc) == 1 })
	release()
	if err := <-got; err != nil {
		t.Fatalf("granted once the other process let go: %v", err)
	}
	if s, l, w := sc.counts(); s+l+w != 0 {
		t.Fatalf("left behind: %d scans, %d leases, %d waiters", s, l, w)
	}
	if held, _, users := b.scan("s").snapshot(); held != 0 || users != 0 {
		t.Fatalf("backend left with hold %v, %d users", held, users)
	}
}

// While a writer elsewhere waits, new readers of this process do not
// join the hold it has; once the writer is gone they do.
func TestSchedWriterElsewhere(t *testing.T) {
	sc, b := newTestScheduler(0)
	r1 := mustSched(t, sc, "s", Shared, testOwner("r1"))
	f := b.scan("s")
	f.mu.Lock()
	f.writer = true
	f.mu.Unlock()
	if _, err := schedAcquire(context.Background(), sc, "s", Shared, testOwner("r2"), true); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("joining while a writer elsewhere waits: %v, want ErrWouldBlock", err)
	}
	got := schedAcquireReleased(sc, "s", Shared, testOwner("r2"))
	waitFor(t, "r2 waits", func() bool { return waiters(sc) == 1 })
	f.mu.Lock()
	f.writer = false
	f.mu.Unlock()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	r1.Release()
}

// An upgrade whose shared hold is released meanwhile (by another
// goroutine of the same owner) goes on as a plain exclusive request: the
// backend learns that the shared hold is orphaned and drops it.
func TestSchedOrphanedUpgrade(t *testing.T) {
	sc, b := newTestScheduler(0)
	o := testOwner("a")
	a := mustSched(t, sc, "s", Shared, o)
	release := b.scan("s").holdElsewhere() // another process reads too: the upgrade waits in the backend
	got := make(chan error, 1)
	go func() {
		l, err := schedAcquire(context.Background(), sc, "s", Exclusive, o, false)
		if err == nil {
			err = l.Release()
		}
		got <- err
	}()
	waitFor(t, "the upgrade waits", func() bool { return waiters(sc) == 1 })
	a.Release() // by "another goroutine": the hold stays, the upgrader is busy with it
	waitFor(t, "the orphaned shared hold is dropped", func() bool {
		_, calls, _ := b.scan("s").snapshot()
		return slices.Contains(calls, "orphan dropped")
	})
	release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	b.wantCalls(t, "s", "lock none->shared", "lock shared->exclusive", "orphan dropped", "unlock")
}

// A non-blocking request that arrives while the last holder's release is
// dropping the hold waits for that instead of failing: the scan is free
// a moment later.
func TestSchedTryDuringRelease(t *testing.T) {
	sc, b := newTestScheduler(0)
	f := b.scan("s")
	a := mustSched(t, sc, "s", Exclusive, testOwner("a"))
	gate := make(chan struct{})
	f.mu.Lock()
	f.unlocking = gate
	f.mu.Unlock()
	released := make(chan error, 1)
	go func() { released <- a.Release() }()
	waitFor(t, "the release is in the backend", func() bool {
		_, calls, _ := f.snapshot()
		return calls[len(calls)-1] == "unlock"
	})
	got := make(chan error, 1)
	go func() {
		l, err := schedAcquire(context.Background(), sc, "s", Exclusive, testOwner("b"), true)
		if err == nil {
			f.mu.Lock()
			f.unlocking = nil
			f.mu.Unlock()
			err = l.Release()
		}
		got <- err
	}()
	waitFor(t, "the try request waits for the release", func() bool { return waiters(sc) == 1 })
	close(gate)
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("try during a release: %v", err)
	}
}
