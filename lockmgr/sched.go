package lockmgr

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// scheduler is the in-process half of the lock manager: owners, leases,
// the FIFO queue, admission, upgrades and deadlock detection. It knows
// nothing about files: whatever must hold a scan against other processes
// it asks of its backend (backend.go), one goroutine per scan at a time.
type scheduler struct {
	back    backend
	timeout time.Duration // default wait for a context without deadline
	log     logrus.FieldLogger
	debug   bool
	closed  atomic.Bool
	closeCh chan struct{}

	mu    sync.Mutex // guards scans and every scan's refs; a leaf after scan.mu is released
	scans map[string]*scan
}

func newScheduler(back backend, timeout time.Duration, log logrus.FieldLogger, debug bool) *scheduler {
	return &scheduler{back: back, timeout: timeout, log: log, debug: debug,
		closeCh: make(chan struct{}), scans: make(map[string]*scan)}
}

// scan is what the scheduler knows about one scan while it is in use in
// this process (from the first request to the last release).
type scan struct {
	id   string
	hold backendScan // the backend's handle, for as long as the scan is in the map
	refs int         // requests in flight + live leases; guarded by scheduler.mu

	mu       sync.Mutex // guards everything below
	owners   map[ownerID]*ownerHold
	leases   map[*Lease]struct{}
	queue    []*waiter
	queue0   [2]*waiter    // queue's first backing array
	changed  chan struct{} // closed on every state change if goroutines sleep on it (nil until one does)
	sleepers int
	busy     bool // a goroutine is talking to the backend (without mu)
	dropping bool // ...to drop the hold (which does not wait)
	held     Mode // what the backend holds for this process; 0 while it is being dropped
	// Loans (loan.go): leases granted under another process's hold,
	// before the backend held the scan for them.
	keeping  bool               // a keeper goroutine runs for the scan
	keepFor  Mode               // the mode the keeper asks the backend for
	keepStop context.CancelFunc // ends the keeper's backend request; nil when it makes none
}

type ownerHold struct {
	owner        Owner // as first granted (the identity is owner.id())
	shared, excl int
}

type waiter struct {
	owner    Owner
	oid      ownerID
	mode     Mode
	upgrade  bool
	since    time.Time
	recorded bool // counted in the backend's waiting record
}

// Lease is one granted lock. Release it exactly once.
type Lease struct {
	sc       *scheduler
	s        *scan
	owner    Owner
	mode     Mode
	since    time.Time
	waited   time.Duration
	released bool // guarded by s.mu
	loaned   bool // granted under another process's hold, not this process's (loan.go)
}

// ScanID returns the scan the lease locks.
func (l *Lease) ScanID() string { return l.s.id }

// Mode returns the mode the lease was granted in.
func (l *Lease) Mode() Mode { return l.mode }

// Owner returns the owner the lease was granted to.
func (l *Lease) Owner() Owner { return l.owner }

// Waited returns how long the request waited before it was granted.
func (l *Lease) Waited() time.Duration { return l.waited }

// ref returns the scan id, creating it (and its backend handle) if
// needed, and counts one more user of it.
func (sc *scheduler) ref(id string) *scan {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	s := sc.scans[id]
	if s == nil {
		s = &scan{
			id:     id,
			hold:   sc.back.open(id),
			owners: make(map[ownerID]*ownerHold),
			leases: make(map[*Lease]struct{}),
		}
		s.queue = s.queue0[:0]
		sc.scans[id] = s
	}
	s.refs++
	return s
}

// unref drops one user of s; the last one hands the backend handle back.
func (sc *scheduler) unref(s *scan) {
	sc.mu.Lock()
	s.refs--
	last := s.refs == 0 && sc.scans[s.id] == s
	if last {
		delete(sc.scans, s.id)
	}
	sc.mu.Unlock()
	if last {
		s.hold.done()
	}
}

// inUse returns the scans in use, for status and statistics.
func (sc *scheduler) inUse() []*scan {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	out := make([]*scan, 0, len(sc.scans))
	for _, s := range sc.scans {
		out = append(out, s)
	}
	return out
}

// lookup returns scan id if it is in use, or nil.
func (sc *scheduler) lookup(id string) *scan {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.scans[id]
}

// acquire grants owner mode on scan id, waiting (unless try) until it is
// admissible here and the backend holds it. ctx is a *lazyCtx so that a
// request that does not wait creates no timer.
//
// With loan, a request that no owner of this process stands in the way
// of is granted at once, as a loan under another process's hold (the
// caller checked that hold: loan.go); a keeper then takes the hold in
// this process as soon as the backend can.
func (sc *scheduler) acquire(ctx *lazyCtx, id string, mode Mode, owner Owner, try, loan bool, start time.Time) (*Lease, error) {
	if sc.closed.Load() {
		return nil, ErrClosed
	}
	s := sc.ref(id)
	if loan {
		if l, keeper := sc.lend(s, mode, owner, start); l != nil {
			if keeper {
				go sc.keep(sc.ref(id)) // the lease's reference keeps s in the map
			}
			return l, nil
		}
	}
	l, err := sc.acquireRef(ctx, s, mode, owner, try, start)
	if err != nil {
		sc.unref(s)
	}
	return l, err
}

// acquireRef does the work of acquire on a referenced scan. On success the
// reference passes to the lease.
func (sc *scheduler) acquireRef(ctx *lazyCtx, s *scan, mode Mode, owner Owner, try bool, start time.Time) (*Lease, error) {
	oid := owner.id()
	s.mu.Lock()
	// Reentrant requests are granted at once: an exclusive holder may take
	// anything, a shared holder may take shared again.
	if oh := s.owners[oid]; oh != nil && (oh.excl > 0 || mode == Shared) {
		l := sc.grantHeld(s, owner, mode, start)
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
	return sc.wait(ctx, s, w, try, start)
}

// wait runs with s.mu held and w queued, until w is granted or gives up;
// it returns with s.mu released and w dequeued.
func (sc *scheduler) wait(ctx *lazyCtx, s *scan, w *waiter, try bool, start time.Time) (*Lease, error) {
	var poll *time.Timer // re-checks the backend while a writer elsewhere waits
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	delay := backoffMin
	for {
		if sc.closed.Load() {
			s.dequeueHeld(w)
			s.mu.Unlock()
			return nil, ErrClosed
		}
		var pollC <-chan time.Time
		if s.admissibleHeld(w) {
			if s.held >= w.mode {
				// Joining the holders of this process needs the backend
				// for nothing, but a new reader must not keep the scan
				// held for ever while a writer elsewhere waits.
				if w.mode == Exclusive || !s.hold.writerWaiting() {
					s.dequeueHeld(w)
					l := sc.grantHeld(s, w.owner, w.mode, start)
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
				return sc.takeHold(ctx, s, w, try, start)
			}
		}
		if try && !s.dropping {
			// A hold being dropped is gone in a moment (non-blocking
			// calls): a non-blocking request waits for that.
			s.dequeueHeld(w)
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: scan %s is held or wanted by another owner", ErrWouldBlock, s.id)
		}
		if !w.recorded && !s.dropping {
			// It really waits: other processes may see it now. Not
			// for a hold being dropped, which is gone in a moment
			// (non-blocking calls): the kernel sends RELEASE after
			// close(2) without waiting, so a program that closes a
			// file of a scan and opens the next one often comes
			// while its last lease's hold is dropped, and the record
			// cost more system calls than the open itself.
			w.recorded = true
			s.hold.waiting(w.mode, 1)
		}
		ch := s.changedHeld()
		s.sleepers++
		s.mu.Unlock()
		select {
		case <-ch:
		case <-pollC:
		case <-sc.closeCh:
		case <-ctx.Done():
			s.mu.Lock()
			s.sleepers--
			s.dequeueHeld(w)
			s.mu.Unlock()
			return nil, ctx.Err()
		}
		s.mu.Lock()
		s.sleepers--
	}
}

// takeHold asks the backend for the hold w needs (w is admissible), as
// the scan's busy goroutine. It is called with s.mu held and returns with
// it released.
func (sc *scheduler) takeHold(ctx *lazyCtx, s *scan, w *waiter, try bool, start time.Time) (*Lease, error) {
	s.busy = true
	req := holdRequest{from: s.held, to: w.mode, owner: w.owner, try: try}
	if req.from != 0 {
		req.orphaned = func() bool { return s.orphaned() }
	}
	s.mu.Unlock()
	got, err := s.hold.lock(ctx, req)
	s.mu.Lock()
	s.busy = false
	s.held = got
	if err == nil && sc.closed.Load() {
		err = ErrClosed
	}
	if err == nil && s.conflictHeld(w.oid, w.mode) {
		// A loan was granted meanwhile (loan.go): the hold now covers
		// it, and w waits for it to end. (Nothing else can come between:
		// while w takes the hold, nobody else is admitted.)
		s.broadcastHeld()
		return sc.wait(ctx, s, w, try, start)
	}
	s.dequeueHeld(w)
	if err != nil {
		s.dropIdleHold()
		s.mu.Unlock()
		return nil, err
	}
	l := sc.grantHeld(s, w.owner, w.mode, start)
	s.mu.Unlock()
	return l, nil
}

// orphaned is holdRequest.orphaned for an upgrade of s: true when no
// owner holds s any more, and then nobody joins the shared hold that the
// backend drops (held is 0 until the upgrade ends).
func (s *scan) orphaned() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.owners) > 0 || s.held != Shared {
		return false
	}
	s.held = 0
	return true
}

// admissibleHeld says whether w may be granted as far as this process is
// concerned: compatible with the holders, and no writer ahead of a reader.
// s.mu is held.
func (s *scan) admissibleHeld(w *waiter) bool {
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

// dequeueHeld removes w from the queue and wakes the sleepers; s.mu is held.
func (s *scan) dequeueHeld(w *waiter) {
	if w.recorded {
		w.recorded = false
		s.hold.waiting(w.mode, -1)
	}
	for i, q := range s.queue {
		if q == w {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			break
		}
	}
	s.broadcastHeld()
}

// broadcastHeld wakes every goroutine sleeping on the scan's state; s.mu
// is held.
func (s *scan) broadcastHeld() {
	if s.sleepers == 0 || s.changed == nil {
		return // the common uncontended case: no channel to close
	}
	close(s.changed)
	s.changed = nil // the next sleeper makes a new one
}

// changedHeld returns the channel that the next change of s closes; s.mu
// is held.
func (s *scan) changedHeld() chan struct{} {
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// grantHeld records a lease of owner in mode; s.mu is held.
func (sc *scheduler) grantHeld(s *scan, owner Owner, mode Mode, start time.Time) *Lease {
	oid := owner.id()
	oh := s.owners[oid]
	if oh == nil {
		oh = &ownerHold{owner: owner}
		s.owners[oid] = oh
	}
	if mode == Exclusive {
		oh.excl++
	} else {
		oh.shared++
	}
	now := time.Now()
	l := &Lease{sc: sc, s: s, owner: owner, mode: mode, since: now, waited: now.Sub(start)}
	s.leases[l] = struct{}{}
	return l
}

// Release gives the lock back. The last release of a scan in this process
// drops the process's hold (for the flock backend: removes the .info file
// if it is still ours and unlocks). A second Release of the same lease
// returns ErrNotHeld, as does a Release after Close.
func (l *Lease) Release() error {
	if l == nil {
		return fmt.Errorf("%w: nil lease", ErrNotHeld)
	}
	sc, s := l.sc, l.s
	s.mu.Lock()
	if l.released {
		s.mu.Unlock()
		if sc.closed.Load() {
			return fmt.Errorf("%w: %s lease on scan %s of %s: the manager was closed", ErrNotHeld, l.mode, s.id, l.owner)
		}
		err := fmt.Errorf("%w: %s lease on scan %s of %s released twice", ErrNotHeld, l.mode, s.id, l.owner)
		sc.log.WithError(err).Error("double release")
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
	s.stopKeeperHeld()
	s.dropIdleHold()
	s.broadcastHeld()
	s.mu.Unlock()
	sc.unref(s)
	if sc.debug {
		sc.log.WithFields(logrus.Fields{"scan": s.id, "mode": l.mode, "owner": l.owner.String(),
			"held": time.Since(l.since)}).Debug("scan lock released")
	}
	return nil
}

// dropIdleHold has the backend drop the hold of s if nobody in this
// process holds or is taking it. It is called with s.mu held and returns
// with it held, but releases it while the backend works (as the busy
// goroutine: nobody joins or takes the hold meanwhile).
func (s *scan) dropIdleHold() {
	for len(s.owners) == 0 && !s.busy && s.held != 0 {
		s.busy, s.dropping, s.held = true, true, 0
		s.mu.Unlock()
		s.hold.unlock()
		s.mu.Lock()
		s.busy, s.dropping = false, false
		s.broadcastHeld()
	}
}

// close ends every lease and wait with ErrClosed (leases released later
// return ErrNotHeld) and drops every hold.
func (sc *scheduler) close() {
	if !sc.closed.CompareAndSwap(false, true) {
		return
	}
	close(sc.closeCh)
	for _, s := range sc.inUse() {
		s.mu.Lock()
		n := 0
		for l := range s.leases {
			l.released = true
			n++
		}
		s.leases = make(map[*Lease]struct{})
		s.owners = make(map[ownerID]*ownerHold)
		s.dropIdleHold()
		s.broadcastHeld()
		s.mu.Unlock()
		for range n {
			sc.unref(s)
		}
	}
}

// holders returns the owners holding scan id in this process, one per
// owner, as each was first granted.
func (sc *scheduler) holders(id string) []Owner {
	s := sc.lookup(id)
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Owner, 0, len(s.owners))
	for _, oh := range s.owners {
		out = append(out, oh.owner)
	}
	return out
}

// heldBy reports whether an owner whose key is not key holds scan id in
// this process, and whether one with key does.
func (sc *scheduler) heldBy(id, key string) (others, self bool) {
	s := sc.lookup(id)
	if s == nil {
		return false, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for oid := range s.owners {
		if oid.key == key {
			self = true
		} else {
			others = true
		}
	}
	return others, self
}

// snapshot copies the leases and waiters of scan id (none if it is not in
// use), for status.
func (sc *scheduler) snapshot(id string, lease func(Owner, Mode, time.Time), waiting func(Owner, Mode, time.Time)) {
	s := sc.lookup(id)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.leases {
		lease(l.owner, l.mode, l.since)
	}
	for _, w := range s.queue {
		waiting(w.owner, w.mode, w.since)
	}
}

// counts returns the scans with leases or waiters, the leases and the
// waiters.
func (sc *scheduler) counts() (scans, leases, waiters int) {
	for _, s := range sc.inUse() {
		s.mu.Lock()
		if len(s.leases)+len(s.queue) > 0 {
			scans++
		}
		leases += len(s.leases)
		waiters += len(s.queue)
		s.mu.Unlock()
	}
	return scans, leases, waiters
}

// waitContext returns the context of one request: ctx with the default
// timeout when it has no deadline (and the request may wait), and with
// the cancel grace, both created only if the request really waits.
func (sc *scheduler) waitContext(ctx context.Context, try bool, start time.Time, grace time.Duration) *lazyCtx {
	wc := &lazyCtx{parent: ctx, grace: grace}
	if _, ok := ctx.Deadline(); !ok && !try && sc.timeout > 0 {
		wc.at = start.Add(sc.timeout)
	}
	return wc
}
