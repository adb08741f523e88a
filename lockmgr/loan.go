package lockmgr

import (
	"context"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Loans: leases granted under another process's hold.
//
// A process that holds a scan outside this process (its flock on the
// lock file: plantdb, flock(1), `scanlockfs run`) may have work done for
// it here: the scanlockfs mount serves the holder's descendants, which
// act under the holder's lock. This process cannot take the scan while
// the holder has it exclusively, so such a request is granted at once as
// a loan, with the Loan option, once the caller made sure the holder
// covers it. The loan is recorded like any lease: owners of this process
// wait for it as for any holder. A keeper then asks the backend for the
// hold the loans need and keeps trying until it has it (or the loans
// end): when the holder releases the scan, this process holds it next,
// so that a loan still in use stays protected. A shared hold is
// compatible with the holder's shared one and is taken at once, in spite
// of a writer waiting elsewhere (the holder keeps that writer waiting
// anyway); an exclusive one is waited for as a writer does, at the
// front: no owner of this process can get in between, and the writer's
// gate holds back new readers of our other processes. What a poll cannot
// prevent is a process of another protocol (flock(1), plantdb) that
// waits in a blocking flock(2) and gets the scan first when the holder
// releases it: until the keeper has the hold, a loan is only as good as
// the holder's.

// Loan makes Acquire grant the request at once as a loan when no owner
// of this manager stands in the way, because process pid holds the scan
// on the lock file in a mode that covers it: exclusive for any request,
// shared for a shared one. The hold is checked again after the loan is
// recorded (it may have ended since the caller looked): a loan whose
// hold is gone, and which this process does not hold itself yet, is
// given back and the request waits like any other. Without such a hold
// the option changes nothing.
func Loan(pid int) AcquireOption {
	return func(o *acquireOpts) { o.loanPID = pid }
}

// ProcessHold is a hold of a scan by another process: its flock on the
// scan's lock file, as /proc/locks reports it.
type ProcessHold struct {
	PID  int
	Mode Mode
}

// ProcessHolds returns the flocks other processes hold (not wait for) on
// scanID's lock file, one per process and mode; none if there is no lock
// file. It reads /proc/locks (about 20 µs with few locks), which the
// kernel does not produce atomically: treat the answer as a snapshot.
func (m *Manager) ProcessHolds(scanID string) ([]ProcessHold, error) {
	if err := ValidateScanID(scanID); err != nil {
		return nil, err
	}
	fid, ok := m.lockFileID(scanID)
	if !ok {
		return nil, nil // nobody can hold a lock file that is not there
	}
	locks, err := readProcLocks()
	if err != nil {
		return nil, err
	}
	var out []ProcessHold
	for _, pl := range locks {
		if pl.file != fid || pl.kind != "FLOCK" || pl.blocked || pl.pid == m.pid {
			continue
		}
		if h := (ProcessHold{PID: pl.pid, Mode: pl.mode}); !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out, nil
}

// lockFileID returns the identity of scan id's lock file, if it has one.
func (m *Manager) lockFileID(id string) (fileID, bool) {
	if m.dir.refresh() != nil {
		return fileID{}, false
	}
	var st unix.Stat_t
	if m.dir.lstat(id+".lock", &st) != nil || checkFile(&st) != nil {
		return fileID{}, false
	}
	return fileID{st.Dev, st.Ino}, true
}

// covers reports whether process pid holds scan id in a mode that covers
// a request in mode. /proc/locks is read up to three times: while many
// locks change, the kernel's page-at-a-time listing can miss a line.
func (m *Manager) covers(id string, pid int, mode Mode) bool {
	for range 3 {
		holds, err := m.ProcessHolds(id)
		if err != nil {
			return false
		}
		for _, h := range holds {
			if h.PID == pid && h.Mode >= mode {
				return true
			}
		}
	}
	return false
}

// confirmLoan gives back a loan whose holder no longer holds the scan
// (see Loan) and waits for the lock instead.
func (m *Manager) confirmLoan(ctx *lazyCtx, l *Lease, pid int, try bool, start time.Time) (*Lease, error) {
	if !l.loaned || m.covers(l.s.id, pid, l.mode) || l.coveredHere() {
		return l, nil
	}
	id, mode, owner := l.s.id, l.mode, l.owner
	_ = l.Release()
	return m.sched.acquire(ctx, id, mode, owner, try, false, start)
}

// coveredHere reports whether this process holds the lease's scan in its
// mode by now (the keeper took the hold).
func (l *Lease) coveredHere() bool {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	return l.s.held >= l.mode
}

// lend grants owner mode on s at once as a loan, unless another owner of
// this process holds s in a conflicting mode (then the caller's view of
// the other process's hold is out of date, and the request waits). keeper
// says that the caller must start the scan's keeper.
func (sc *scheduler) lend(s *scan, mode Mode, owner Owner, start time.Time) (l *Lease, keeper bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conflictHeld(owner.id(), mode) {
		return nil, false
	}
	l = sc.grantHeld(s, owner, mode, start)
	l.loaned = s.held < mode
	if l.loaned && !s.keeping {
		s.keeping = true
		keeper = true
	}
	return l, keeper
}

// conflictHeld reports whether an owner of s other than oid holds it in a
// mode that conflicts with mode. s.mu is held.
func (s *scan) conflictHeld(oid ownerID, mode Mode) bool {
	for id, oh := range s.owners {
		if id != oid && (mode == Exclusive || oh.excl > 0) {
			return true
		}
	}
	return false
}

// neededHeld is the mode the owners of s need the backend to hold: the
// strongest they hold. s.mu is held.
func (s *scan) neededHeld() Mode {
	need := Mode(0)
	for _, oh := range s.owners {
		if oh.excl > 0 {
			return Exclusive
		}
		need = Shared
	}
	return need
}

// loanOwner is an owner of the loans of s, for the backend's records
// (the .info file). s.mu is held.
func (s *scan) loanOwner() Owner {
	var o Owner
	for _, oh := range s.owners {
		o = oh.owner
		if oh.excl > 0 {
			break
		}
	}
	return o
}

// stopKeeperHeld ends the keeper's backend request when the owners no
// longer need what it asks for (the loans were released). s.mu is held.
func (s *scan) stopKeeperHeld() {
	if s.keepStop != nil && s.neededHeld() < s.keepFor {
		s.keepStop()
	}
}

// keep is the keeper of s: it asks the backend for the hold the owners
// of s need until the backend holds it, the owners are gone or the
// scheduler closes. It runs as a goroutine with a reference of its own
// to s, as the scan's busy goroutine while it talks to the backend.
func (sc *scheduler) keep(s *scan) {
	defer sc.unref(s)
	delay := backoffMin
	s.mu.Lock()
	for !sc.closed.Load() {
		need := s.neededHeld()
		if need <= s.held {
			break
		}
		if s.busy {
			// A waiter of this process is taking a hold; what it gets
			// covers the loans, or the keeper asks for more after it.
			sc.sleepHeld(s, nil)
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		req := holdRequest{from: s.held, to: need, owner: s.loanOwner(), loan: true}
		if req.from != 0 {
			req.orphaned = s.orphaned
		}
		s.busy, s.keepFor, s.keepStop = true, need, cancel
		s.mu.Unlock()
		got, err := s.hold.lock(ctx, req)
		stopped := ctx.Err() != nil
		cancel()
		s.mu.Lock()
		s.busy, s.keepFor, s.keepStop = false, 0, nil
		s.held = got
		s.broadcastHeld()
		if err != nil && !stopped && !sc.closed.Load() {
			sc.log.WithField("scan", s.id).WithError(err).Warn("cannot take the scan lock for leases granted under another process's hold; retrying")
			t := time.NewTimer(delay)
			sc.sleepHeld(s, t.C)
			t.Stop()
			delay = min(delay*2, 100*time.Millisecond)
		}
	}
	s.keeping = false
	s.dropIdleHold()
	s.broadcastHeld()
	s.mu.Unlock()
}

// sleepHeld waits for a change of s, for timer (if not nil) or for the
// scheduler to close. It is called with s.mu held and returns with it
// held.
func (sc *scheduler) sleepHeld(s *scan, timer <-chan time.Time) {
	ch := s.changedHeld()
	s.sleepers++
	s.mu.Unlock()
	select {
	case <-ch:
	case <-timer:
	case <-sc.closeCh:
	}
	s.mu.Lock()
	s.sleepers--
}
