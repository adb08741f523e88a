package lockmgr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

type ownerHold struct {
	shared, excl int
}

type waiter struct {
	owner   Owner
	oid     ownerID
	mode    Mode
	upgrade bool
	since   time.Time
}

// Lease is one granted lock. Release it exactly once.
type Lease struct {
	m        *Manager
	s        *scanState
	owner    Owner
	mode     Mode
	since    time.Time
	waited   time.Duration
	released bool // guarded by s.mu
}

// ScanID returns the scan the lease locks.
func (l *Lease) ScanID() string { return l.s.id }

// Mode returns the mode the lease was granted in.
func (l *Lease) Mode() Mode { return l.mode }

// Owner returns the owner the lease was granted to.
func (l *Lease) Owner() Owner { return l.owner }

// Waited returns how long the request waited before it was granted.
func (l *Lease) Waited() time.Duration { return l.waited }

// Acquire waits until owner holds scanID in mode, or until ctx is done,
// or until the default timeout passes when ctx has no deadline. It
// returns ErrTimeout, ErrDeadlock, ErrInvalidScanID, ErrClosed,
// ErrLockFile, ErrReadOnly or the context's cancellation error, wrapped.
func (m *Manager) Acquire(ctx context.Context, scanID string, mode Mode, owner Owner) (*Lease, error) {
	return m.acquire(ctx, scanID, mode, owner, false)
}

// TryAcquire is Acquire without waiting: when the lock cannot be granted
// at once it returns ErrWouldBlock.
func (m *Manager) TryAcquire(scanID string, mode Mode, owner Owner) (*Lease, error) {
	return m.acquire(context.Background(), scanID, mode, owner, true)
}

func (m *Manager) acquire(ctx context.Context, scanID string, mode Mode, owner Owner, try bool) (*Lease, error) {
	if err := ValidateScanID(scanID); err != nil {
		return nil, err
	}
	if mode != Shared && mode != Exclusive {
		return nil, fmt.Errorf("lockmgr: invalid mode %v", mode)
	}
	if m.closed.Load() {
		return nil, ErrClosed
	}
	if m.cfg.readOnly {
		return nil, fmt.Errorf("%w: cannot lock scan %s (opened for status only)", ErrReadOnly, scanID)
	}
	start := time.Now()
	s := m.ref(scanID)
	l, err := m.acquireRef(ctx, s, mode, owner, try, start)
	if err != nil {
		m.unref(s)
		m.stats.countError(err)
		if m.debug {
			m.log.WithFields(logrus.Fields{"scan": scanID, "mode": mode, "owner": owner.String(),
				"waited": time.Since(start)}).WithError(err).Debug("scan lock refused")
		}
		return nil, err
	}
	m.stats.countGrant(mode, l.waited)
	if m.debug {
		m.log.WithFields(logrus.Fields{"scan": scanID, "mode": mode, "owner": owner.String(),
			"waited": l.waited}).Debug("scan lock granted")
	}
	return l, nil
}

// acquireRef does the work of acquire on a referenced scan. On success the
// reference passes to the lease.
func (m *Manager) acquireRef(ctx context.Context, s *scanState, mode Mode, owner Owner, try bool, start time.Time) (*Lease, error) {
	oid := owner.id()
	if m.debug {
		m.log.WithFields(logrus.Fields{"scan": s.id, "mode": mode, "owner": owner.String()}).Debug("scan lock attempt")
	}
	s.mu.Lock()
	// Reentrant requests are granted at once: an exclusive holder may take
	// anything, a shared holder may take shared again.
	if oh := s.owners[oid]; oh != nil && (oh.excl > 0 || mode == Shared) {
		l := s.grantLocked(m, owner, mode, start)
		s.mu.Unlock()
		return l, nil
	}
	upgrade := s.owners[oid] != nil
	if upgrade {
		for _, w := range s.queue {
			if _, holds := s.owners[w.oid]; w.upgrade && holds && w.oid != oid {
				s.mu.Unlock()
				return nil, fmt.Errorf("%w: scan %s: %s and %s both hold it shared and both want it exclusive",
					ErrDeadlock, s.id, w.owner, owner)
			}
		}
	}
	w := &waiter{owner: owner, oid: oid, mode: mode, upgrade: upgrade, since: start}
	s.queue = append(s.queue, w)

	wc := &lazyCtx{parent: ctx}
	if _, ok := ctx.Deadline(); !ok && !try && m.cfg.timeout > 0 {
		wc.at = start.Add(m.cfg.timeout)
	}
	defer wc.stop()
	var poll *time.Timer // re-checks the gate while a writer of another process waits
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	delay := backoffMin
	for {
		if m.closed.Load() {
			s.dequeueLocked(w)
			s.mu.Unlock()
			return nil, ErrClosed
		}
		var pollC <-chan time.Time
		if s.admissibleLocked(w) {
			if s.osMode >= mode {
				// Joining the holders of this process needs no flock, but a
				// new reader must not keep the scan held for ever while a
				// writer of another process waits (S.gate).
				if mode == Exclusive || !m.writerWaiting(s) {
					s.dequeueLocked(w)
					l := s.grantLocked(m, owner, mode, start)
					s.mu.Unlock()
					return l, nil
				}
				if !try {
					if poll == nil {
						poll = time.NewTimer(delay)
					} else {
						poll.Reset(delay)
					}
					pollC = poll.C
					delay = min(delay*2, backoffMax)
				}
			} else if !s.busy {
				l, err := m.osAcquireLocked(wc, s, w, try, start)
				if err != nil {
					err = m.waitError(err, s.id, mode, start)
				}
				return l, err
			}
		}
		if try {
			s.dequeueLocked(w)
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: scan %s is held or wanted by another owner", ErrWouldBlock, s.id)
		}
		ch := s.changed
		s.sleepers++
		s.mu.Unlock()
		ctx := wc.get()
		select {
		case <-ch:
		case <-pollC:
		case <-m.closeCh:
		case <-ctx.Done():
			s.mu.Lock()
			s.sleepers--
			s.dequeueLocked(w)
			s.mu.Unlock()
			return nil, m.waitError(ctx.Err(), s.id, mode, start)
		}
		s.mu.Lock()
		s.sleepers--
	}
}

// osAcquireLocked takes the flock for w, which is admissible, as the
// scan's busy goroutine. It is called with s.mu held and returns with it
// released.
func (m *Manager) osAcquireLocked(wc *lazyCtx, s *scanState, w *waiter, try bool, start time.Time) (*Lease, error) {
	s.busy = true
	from := s.osMode
	s.mu.Unlock()
	got, err := m.osAcquire(wc, s, from, w.mode, try)
	var tid int
	var infoID fileID
	if err == nil {
		tid = unix.Gettid()
		if m.cfg.infoFiles && m.cfg.infoDelay <= 0 {
			// Synchronous .info: written before the grant, while busy
			// keeps every release away.
			infoID = m.writeInfo(s.id, w.mode, w.owner, time.Now(), tid)
		}
	}
	s.mu.Lock()
	s.busy = false
	if got > s.osMode {
		s.osEpoch++
		s.osOwner, s.osTID = w.owner, tid
	}
	s.setOSMode(got)
	if !infoID.zero() {
		s.info.id, s.info.epoch = infoID, s.osEpoch
	}
	if err == nil && m.closed.Load() {
		err = ErrClosed
	}
	s.dequeueLocked(w)
	if err != nil {
		m.releaseIdleLocked(s)
		s.mu.Unlock()
		return nil, err
	}
	if m.cfg.infoFiles && m.cfg.infoDelay > 0 {
		m.scheduleInfoLocked(s)
	}
	l := s.grantLocked(m, w.owner, w.mode, start)
	s.mu.Unlock()
	return l, nil
}

// lazyCtx applies the manager's default timeout to a context without a
// deadline, creating the timer only when a request really waits.
type lazyCtx struct {
	parent context.Context
	at     time.Time // zero: no default deadline
	ctx    context.Context
	cancel context.CancelFunc
	// stopGrace ends the watch of WithCancelGrace, if any.
	stopGrace context.CancelFunc
}

type cancelGraceKey struct{}

// WithCancelGrace returns a context that makes Acquire go on waiting for
// grace after ctx is cancelled before it gives up with ctx's error. A FUSE
// request is cancelled when the kernel interrupts it, and Go programs get
// spurious interrupts (the runtime preempts threads with signals) that
// raw system calls do not retry: a lock granted within the grace then
// still succeeds. Deadlines apply at once. The cost (a watcher of ctx) is
// only paid by requests that really wait.
func WithCancelGrace(ctx context.Context, grace time.Duration) context.Context {
	return context.WithValue(ctx, cancelGraceKey{}, grace)
}

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
		if g, ok := l.parent.Value(cancelGraceKey{}).(time.Duration); ok && g > 0 {
			base, l.stopGrace = withCancelGrace(l.parent, g)
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

// waitError turns the end of a wait into the documented errors.
func (m *Manager) waitError(err error, id string, mode Mode, start time.Time) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %s lock on scan %s not granted after %v: %w",
			ErrTimeout, mode, id, time.Since(start).Round(time.Millisecond), err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("waiting for %s lock on scan %s: %w", mode, id, err)
	}
	return err
}

// admissibleLocked says whether w may be granted as far as this process is
// concerned: compatible with the holders, and no writer ahead of a reader.
func (s *scanState) admissibleLocked(w *waiter) bool {
	if w.upgrade {
		if _, self := s.owners[w.oid]; self {
			return len(s.owners) == 1
		}
		// Its shared hold was released meanwhile (by another goroutine of
		// the same owner): it is a plain exclusive request now.
	}
	if w.mode == Exclusive {
		if len(s.owners) != 0 {
			return false
		}
		for _, q := range s.queue {
			if q == w {
				return true
			}
			if !q.upgrade {
				return false // FIFO among writers and the readers ahead of them
			}
		}
		return true
	}
	for _, oh := range s.owners {
		if oh.excl > 0 {
			return false
		}
	}
	for _, q := range s.queue {
		if q == w {
			return true
		}
		if q.mode == Exclusive {
			return false // no writer starvation: queue behind the waiting writer
		}
	}
	return true
}

func (s *scanState) dequeueLocked(w *waiter) {
	for i, q := range s.queue {
		if q == w {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			break
		}
	}
	s.broadcastLocked()
}

// broadcastLocked wakes every goroutine sleeping on the scan's state.
func (s *scanState) broadcastLocked() {
	if s.sleepers == 0 {
		return // the common uncontended case: no channel to replace
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *scanState) setOSMode(m Mode) {
	if m != s.osMode {
		s.osMode = m
		s.osSince = time.Now()
	}
}

func (s *scanState) grantLocked(m *Manager, owner Owner, mode Mode, start time.Time) *Lease {
	oid := owner.id()
	oh := s.owners[oid]
	if oh == nil {
		oh = &ownerHold{}
		s.owners[oid] = oh
	}
	if mode == Exclusive {
		oh.excl++
	} else {
		oh.shared++
	}
	now := time.Now()
	l := &Lease{m: m, s: s, owner: owner, mode: mode, since: now, waited: now.Sub(start)}
	s.leases[l] = struct{}{}
	return l
}

// Release gives the lock back. The last release of a scan in this process
// removes the .info file if it is still ours and drops the flock. A
// second Release of the same lease returns ErrNotHeld, as does a Release
// after Close.
func (l *Lease) Release() error {
	if l == nil {
		return fmt.Errorf("%w: nil lease", ErrNotHeld)
	}
	m, s := l.m, l.s
	s.mu.Lock()
	if l.released {
		s.mu.Unlock()
		if m.closed.Load() {
			return fmt.Errorf("%w: %s lease on scan %s of %s: the manager was closed", ErrNotHeld, l.mode, s.id, l.owner)
		}
		err := fmt.Errorf("%w: %s lease on scan %s of %s released twice", ErrNotHeld, l.mode, s.id, l.owner)
		m.log.WithError(err).Error("double release")
		return err
	}
	l.released = true
	delete(s.leases, l)
	oid := l.owner.id()
	if oh := s.owners[oid]; oh != nil {
		if l.mode == Exclusive {
			oh.excl--
		} else {
			oh.shared--
		}
		if oh.excl <= 0 && oh.shared <= 0 {
			delete(s.owners, oid)
		}
	}
	m.releaseIdleLocked(s)
	s.broadcastLocked()
	s.mu.Unlock()
	m.unref(s)
	if m.debug {
		m.log.WithFields(logrus.Fields{"scan": s.id, "mode": l.mode, "owner": l.owner.String(),
			"held": time.Since(l.since)}).Debug("scan lock released")
	}
	return nil
}

// releaseIdleLocked drops the flock of s if nobody in this process holds
// or is taking it. An .info write in flight is waited for (without
// holding s.mu), so that no .info of ours outlives our flock.
func (m *Manager) releaseIdleLocked(s *scanState) {
	for len(s.owners) == 0 && !s.busy && s.osMode != 0 {
		if s.info.busy {
			ch := s.changed
			s.sleepers++
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
			s.sleepers--
			continue
		}
		m.osReleaseLocked(s)
	}
}

// osReleaseLocked removes the .info file if it is still ours and drops
// this process's flock on s (non-blocking system calls).
func (m *Manager) osReleaseLocked(s *scanState) {
	m.cancelInfoLocked(s)
	if s.fd >= 0 {
		m.checkStillNamed(s)
		if err := unix.Flock(s.fd, unix.LOCK_UN); err != nil {
			m.log.WithError(err).WithField("scan", s.id).Warn("unlocking scan lock file failed; closing it")
			closeLockFile(s)
		}
	}
	s.setOSMode(0)
}
