package lockmgr

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// schedLoan asks the scheduler for a loan, as Acquire with Loan does
// before it checks the other process's hold.
func schedLoan(sc *scheduler, id string, mode Mode, o Owner) (*Lease, error) {
	start := time.Now()
	wc := sc.waitContext(context.Background(), true, start, 0)
	defer wc.stop()
	return sc.acquire(wc, id, mode, o, true, true, start)
}

// keeping reports whether scan id's keeper runs.
func keeping(sc *scheduler, id string) bool {
	s := sc.lookup(id)
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keeping
}

// A loan is granted at once while another process holds the scan; owners
// of this process wait for it as for any holder, also the one that was
// taking the backend's hold when the loan came and gets it when the other
// process releases: the hold then covers the loan, and that owner is
// granted only once the loan is released.
func TestLoanGrantedUnderAnotherProcessHold(t *testing.T) {
	sc, b := newTestScheduler(time.Minute)
	release := b.scan("s").holdElsewhere()
	writer := grantedLater(func() (*Lease, error) {
		return schedAcquire(context.Background(), sc, "s", Exclusive, testOwner("writer"), false)
	})
	waitFor(t, "the writer waits for the backend", func() bool {
		_, calls, _ := b.scan("s").snapshot()
		return slices.Contains(calls, "lock none->exclusive")
	})

	loan, err := schedLoan(sc, "s", Exclusive, testOwner("family"))
	if err != nil {
		t.Fatalf("loan under another process's exclusive hold: %v", err)
	}
	if !loan.loaned {
		t.Fatal("a lease granted before this process held the scan is not marked as a loan")
	}
	release()
	waitFor(t, "the backend holds the scan for the loan", func() bool {
		held, _, _ := b.scan("s").snapshot()
		return held == Exclusive && !keeping(sc, "s")
	})
	grantedAfter(t, writer, loan)
}

// Alone, the keeper asks the backend for the hold the loans need and
// drops it with the last loan; a loan is refused (the request waits like
// any other) when an owner of this process holds the scan in a
// conflicting mode.
func TestLoanKeeperAndConflict(t *testing.T) {
	sc, b := newTestScheduler(time.Minute)
	release := b.scan("s").holdElsewhere()
	r1, err := schedLoan(sc, "s", Shared, testOwner("family"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := schedLoan(sc, "s", Shared, testOwner("family"))
	if err != nil {
		t.Fatal(err)
	}
	release()
	waitFor(t, "the keeper took the shared hold", func() bool {
		held, _, _ := b.scan("s").snapshot()
		return held == Shared && !keeping(sc, "s")
	})
	if _, err := schedLoan(sc, "s", Exclusive, testOwner("other")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("loan against a shared holder of this process: %v, want it to wait (ErrWouldBlock without waiting)", err)
	}
	mustRelease(t, r1)
	mustRelease(t, r2)
	if held, calls, _ := b.scan("s").snapshot(); held != 0 || calls[len(calls)-1] != "unlock" {
		t.Fatalf("after the last loan: held %v, calls %v; want the hold dropped", held, calls)
	}

	// A keeper whose loans end before it gets the hold gives up.
	release = b.scan("s").holdElsewhere()
	defer release()
	l, err := schedLoan(sc, "s", Exclusive, testOwner("family"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the keeper asks the backend", func() bool {
		_, calls, _ := b.scan("s").snapshot()
		return calls[len(calls)-1] == "lock none->exclusive"
	})
	mustRelease(t, l)
	waitFor(t, "the keeper gave up", func() bool { return !keeping(sc, "s") && sc.lookup("s") == nil })
}

// flockHolder runs flock(1) holding path in mode until the returned
// function is called; it returns flock's pid once it holds the lock.
func flockHolder(t *testing.T, path string, mode Mode) (pid int, release func()) {
	t.Helper()
	flag := "-s"
	if mode == Exclusive {
		flag = "-x"
	}
	cmd := exec.Command("flock", flag, path, "cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1): %v", err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			in.Close()
			cmd.Wait()
		}
	}
	t.Cleanup(release)
	waitFor(t, "flock(1) holds "+path, func() bool {
		_, err := os.Stat(path)
		return err == nil && flockHolders(t, path)[cmd.Process.Pid] == mode
	})
	return cmd.Process.Pid, release
}

// Acquire with Loan: granted at once under a real flock of another
// process that covers it; given back (the request waits) when the named
// process holds nothing; when the holder releases, this process takes
// the flock for the loan before its own waiting writer is granted.
func TestLoanUnderProcessFlock(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithTimeout(time.Minute))
	path := m.lockPath("s")
	holder, release := flockHolder(t, path, Exclusive)
	if got, err := m.ProcessHolds("s"); err != nil || !slices.Contains(got, ProcessHold{PID: holder, Mode: Exclusive}) {
		t.Fatalf("ProcessHolds: %v, %v; want flock(1)'s exclusive hold", got, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := m.Acquire(ctx, "s", Shared, testOwner("stranger"), Loan(os.Getppid()))
	cancel()
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("loan naming a process that holds nothing: %v, want it to wait (ErrTimeout)", err)
	}

	writer := grantedLater(func() (*Lease, error) {
		return m.Acquire(context.Background(), "s", Exclusive, testOwner("writer"))
	})
	waitFor(t, "the writer waits", func() bool { return queued(t, m, "s") == 1 })
	loan, err := m.Acquire(context.Background(), "s", Exclusive, testOwner("family"), Loan(holder))
	if err != nil {
		t.Fatalf("loan under flock(1)'s exclusive hold: %v", err)
	}
	release()
	waitFor(t, "this process holds the flock for the loan", func() bool {
		return flockHolders(t, path)[os.Getpid()] == Exclusive
	})
	st, err := m.Status("s")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Holders) != 1 || st.Holders[0].Owner != "family" {
		t.Fatalf("holders while the loan is held: %+v, want the loan only", st.Holders)
	}
	grantedAfter(t, writer, loan)
}

// grantedLater runs acquire in the background; the channel gets its
// error once it returned (and released what it got).
func grantedLater(acquire func() (*Lease, error)) <-chan error {
	ch := make(chan error, 1)
	go func() {
		l, err := acquire()
		if err == nil {
			l.Release()
		}
		ch <- err
	}()
	return ch
}

// grantedAfter checks that the writer was not granted while loan was
// held, releases loan, and checks that the writer is granted then.
func grantedAfter(t *testing.T, writer <-chan error, loan *Lease) {
	t.Helper()
	select {
	case err := <-writer:
		t.Fatalf("the writer was granted (%v) while the loan is held", err)
	default:
	}
	mustRelease(t, loan)
	if err := <-writer; err != nil {
		t.Fatalf("writer after the loan: %v", err)
	}
}

func (f *fakeScan) waiting(Mode, int) {}

// Regression: an upgrade whose own shared lease was released while it
// took the exclusive hold, with a reader ahead of it that holds back for a
// writer elsewhere, is granted the hold it took. Holding back the
// upgrade there (as if a loan had come in) left the hold held by nobody,
// and every process waited until its timeout.
func TestUpgradeGrantedAfterItsSharedLeaseWentAway(t *testing.T) {
	sc, b := newTestScheduler(time.Minute)
	f := b.scan("s")
	a := testOwner("a")
	shared := mustSched(t, sc, "s", Shared, a)
	f.mu.Lock()
	f.writer = true // a writer elsewhere waits: new readers hold back
	f.mu.Unlock()
	reader := grantedLater(func() (*Lease, error) {
		return schedAcquire(context.Background(), sc, "s", Shared, testOwner("reader"), false)
	})
	waitFor(t, "the reader queued", func() bool { return waiters(sc) == 1 })
	release := f.holdElsewhere()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	upgrade := grantedLater(func() (*Lease, error) { return schedAcquire(ctx, sc, "s", Exclusive, a, false) })
	waitFor(t, "the upgrade asks the backend", func() bool {
		_, calls, _ := f.snapshot()
		return calls[len(calls)-1] == "lock shared->exclusive"
	})
	mustRelease(t, shared)
	release()
	if err := <-upgrade; err != nil {
		t.Fatalf("upgrade: %v, want it granted", err)
	}
	f.mu.Lock()
	f.writer = false
	f.mu.Unlock()
	if err := <-reader; err != nil {
		t.Fatalf("reader: %v", err)
	}
}
