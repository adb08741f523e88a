package lockmgr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// AcquireOption sets the policy of one Acquire call.
type AcquireOption func(*acquireOpts)

type acquireOpts struct {
	grace         time.Duration // CancelGrace
	deadlockRetry time.Duration // RetryDeadlock
	probe         bool          // Probe
	loanPID       int           // Loan
}

// CancelGrace makes Acquire go on waiting for grace after its context is
// cancelled before it gives up with the context's error. A FUSE request
// is cancelled when the kernel interrupts it, and Go programs get
// spurious interrupts (the runtime preempts threads with signals) that
// raw system calls do not retry: a lock granted within the grace then
// still succeeds. Deadlines apply at once. The cost (a watcher of the
// context) is only paid by requests that really wait.
func CancelGrace(grace time.Duration) AcquireOption {
	return func(o *acquireOpts) { o.grace = grace }
}

// RetryDeadlock makes Acquire try a request refused with ErrDeadlock
// again, with a short back-off, for up to d before it returns
// ErrDeadlock. Two owners that release their shared holds a moment later
// (the kernel sends FUSE RELEASE asynchronously after close(2)) then
// look like two upgraders waiting for each other only for that moment.
// A real deadlock costs d.
func RetryDeadlock(d time.Duration) AcquireOption {
	return func(o *acquireOpts) { o.deadlockRetry = d }
}

// Probe marks a TryAcquire as a probe made before a wait (the caller
// decides how to wait once it knows the lock is busy): a refusal with
// ErrWouldBlock or ErrDeadlock is not counted in Stats, the wait that
// follows is.
func Probe() AcquireOption {
	return func(o *acquireOpts) { o.probe = true }
}

// Acquire waits until owner holds scanID in mode, or until ctx is done,
// or until the default timeout passes when ctx has no deadline. It
// returns ErrTimeout, ErrDeadlock, ErrInvalidScanID, ErrClosed,
// ErrLockFile, ErrReadOnly or the context's cancellation error, wrapped.
// Stats count the request once, whatever retries RetryDeadlock made.
func (m *Manager) Acquire(ctx context.Context, scanID string, mode Mode, owner Owner, opts ...AcquireOption) (*Lease, error) {
	var o acquireOpts
	for _, f := range opts {
		f(&o)
	}
	l, err := m.acquireRetrying(ctx, scanID, mode, owner, o)
	m.count(l, err)
	return l, err
}

// acquireRetrying is Acquire without the statistics: a request refused
// with ErrDeadlock is tried again for o.deadlockRetry.
func (m *Manager) acquireRetrying(ctx context.Context, scanID string, mode Mode, owner Owner, o acquireOpts) (*Lease, error) {
	var deadline time.Time
	delay := time.Millisecond
	for {
		l, err := m.acquire(ctx, scanID, mode, owner, false, o)
		if o.deadlockRetry <= 0 || !errors.Is(err, ErrDeadlock) {
			return l, err
		}
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(o.deadlockRetry)
		} else if now.After(deadline) {
			return nil, err
		}
		if testHookDeadlockRetry != nil {
			testHookDeadlockRetry()
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// testHookDeadlockRetry, when set by a test, runs before each retry of a
// request refused with ErrDeadlock.
var testHookDeadlockRetry func()

// TryAcquire is Acquire without waiting: when the lock cannot be granted
// at once it returns ErrWouldBlock. Of the options Probe and Loan apply.
func (m *Manager) TryAcquire(scanID string, mode Mode, owner Owner, opts ...AcquireOption) (*Lease, error) {
	var o acquireOpts
	for _, f := range opts {
		f(&o)
	}
	l, err := m.acquire(context.Background(), scanID, mode, owner, true, acquireOpts{loanPID: o.loanPID})
	if !o.probe || !(errors.Is(err, ErrWouldBlock) || errors.Is(err, ErrDeadlock)) {
		m.count(l, err)
	}
	return l, err
}

// count adds the outcome of one request to the statistics.
func (m *Manager) count(l *Lease, err error) {
	if err != nil {
		m.stats.countError(err)
		return
	}
	m.stats.countGrant(l.mode, l.waited)
}

func (m *Manager) acquire(ctx context.Context, scanID string, mode Mode, owner Owner, try bool, o acquireOpts) (*Lease, error) {
	if err := ValidateScanID(scanID); err != nil {
		return nil, err
	}
	if mode != Shared && mode != Exclusive {
		return nil, fmt.Errorf("lockmgr: invalid mode %v", mode)
	}
	if m.sched.closed.Load() {
		return nil, ErrClosed
	}
	if m.cfg.readOnly {
		return nil, fmt.Errorf("%w: cannot lock scan %s (opened for status only)", ErrReadOnly, scanID)
	}
	start := time.Now()
	if m.debug {
		m.log.WithFields(logrus.Fields{"scan": scanID, "mode": mode, "owner": owner.String()}).Debug("scan lock attempt")
	}
	wc := m.sched.waitContext(ctx, try, start, o.grace)
	l, err := m.sched.acquire(wc, scanID, mode, owner, try, o.loanPID > 0, start)
	if err == nil && o.loanPID > 0 {
		l, err = m.confirmLoan(wc, l, o.loanPID, try, start)
	}
	wc.stop()
	if err != nil {
		err = waitError(err, scanID, mode, start)
		if m.debug {
			m.log.WithFields(logrus.Fields{"scan": scanID, "mode": mode, "owner": owner.String(),
				"waited": time.Since(start)}).WithError(err).Debug("scan lock refused")
		}
		return nil, err
	}
	if m.debug {
		m.log.WithFields(logrus.Fields{"scan": scanID, "mode": mode, "owner": owner.String(),
			"waited": l.waited}).Debug("scan lock granted")
	}
	return l, nil
}

// Holders returns the owners that hold scanID through this manager, one
// per owner (User and Key), as each was first granted; none if the scan
// is not held here.
func (m *Manager) Holders(scanID string) []Owner { return m.sched.holders(scanID) }

// HeldBy reports whether an owner whose Key is not key holds scanID
// through this manager (others), and whether one with key does (self).
func (m *Manager) HeldBy(scanID, key string) (others, self bool) {
	return m.sched.heldBy(scanID, key)
}

// waitError turns the end of a wait into the documented errors.
func waitError(err error, id string, mode Mode, start time.Time) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %s lock on scan %s not granted after %v: %w",
			ErrTimeout, mode, id, time.Since(start).Round(time.Millisecond), err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("waiting for %s lock on scan %s: %w", mode, id, err)
	}
	return err
}

// lazyCtx is the context of one request: its parent with the manager's
// default timeout (at) and the cancel grace applied. It is a
// context.Context whose timer and watcher are only created when somebody
// asks for Done or Err, that is when the request really waits. One
// goroutine uses it.
type lazyCtx struct {
	parent context.Context
	at     time.Time     // zero: no default deadline
	grace  time.Duration // CancelGrace, or 0
	ctx    context.Context
	cancel context.CancelFunc
	// stopGrace ends the watch of the cancel grace, if any.
	stopGrace context.CancelFunc
}

func (l *lazyCtx) Deadline() (time.Time, bool) { return l.get().Deadline() }
func (l *lazyCtx) Done() <-chan struct{}       { return l.get().Done() }
func (l *lazyCtx) Err() error                  { return l.get().Err() }
func (l *lazyCtx) Value(key any) any           { return l.parent.Value(key) }

// withCancelGrace derives from parent a context that keeps its values and
// deadline but is cancelled only grace after parent is.
func withCancelGrace(parent context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	if dl, ok := parent.Deadline(); ok {
		var cancelDL context.CancelFunc
		ctx, cancelDL = context.WithDeadline(ctx, dl)
		prev := cancel
		cancel = func() { cancelDL(); prev() }
	}
	var timer *time.Timer
	var mu sync.Mutex
	stop := context.AfterFunc(parent, func() {
		mu.Lock()
		defer mu.Unlock()
		timer = time.AfterFunc(grace, cancel)
	})
	return ctx, func() {
		stop()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

func (l *lazyCtx) get() context.Context {
	if l.ctx == nil {
		base := l.parent
		if l.grace > 0 {
			base, l.stopGrace = withCancelGrace(l.parent, l.grace)
		}
		if l.at.IsZero() {
			l.ctx = base
		} else {
			l.ctx, l.cancel = context.WithDeadline(base, l.at)
		}
	}
	return l.ctx
}

func (l *lazyCtx) stop() {
	if l.stopGrace != nil {
		l.stopGrace()
	}
	if l.cancel != nil {
		l.cancel()
	}
}
