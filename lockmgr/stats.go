package lockmgr

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// WaitBuckets are the upper bounds of the wait-time histogram in Stats.
var WaitBuckets = []time.Duration{
	100 * time.Microsecond, time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond,
	time.Second, 10 * time.Second, 30 * time.Second, time.Minute,
}

type counters struct {
	grantsShared, grantsExclusive   atomic.Uint64
	timeouts, wouldBlock, deadlocks atomic.Uint64
	cancelled, otherErrors          atomic.Uint64
	waitBuckets                     [9]atomic.Uint64 // len(WaitBuckets)+1 (+Inf)
	waitSumNanos                    atomic.Uint64
	infoWrites, replaced, lost      atomic.Uint64
}

// Stats are the manager's counters since New, and its current holders and
// waiters.
type Stats struct {
	GrantsShared    uint64
	GrantsExclusive uint64
	Timeouts        uint64
	WouldBlock      uint64
	Deadlocks       uint64
	Cancelled       uint64
	OtherErrors     uint64
	// WaitCounts[i] counts grants that waited at most WaitBuckets[i]
	// (not cumulative); the last element counts the rest.
	WaitCounts [9]uint64
	WaitSum    time.Duration

	// InfoWrites counts .info files written.
	InfoWrites uint64
	// Replaced counts flocks that had to be taken again because the lock
	// file was unlinked or replaced around the flock call.
	Replaced uint64
	// LostLockFiles counts releases that found the lock file removed or
	// replaced while this process held it: a process outside the protocol
	// (plantdb's release or clean-up) unlinked it, so another process may
	// have held the scan at the same time. Logged as a warning.
	LostLockFiles uint64

	Scans   int // scans with holders or waiters in this process
	Holders int // live leases
	Waiters int // queued requests
}

func (c *counters) countGrant(mode Mode, waited time.Duration) {
	if mode == Exclusive {
		c.grantsExclusive.Add(1)
	} else {
		c.grantsShared.Add(1)
	}
	i := 0
	for i < len(WaitBuckets) && waited > WaitBuckets[i] {
		i++
	}
	c.waitBuckets[i].Add(1)
	c.waitSumNanos.Add(uint64(waited))
}

func (c *counters) countError(err error) {
	switch {
	case errors.Is(err, ErrTimeout):
		c.timeouts.Add(1)
	case errors.Is(err, ErrWouldBlock):
		c.wouldBlock.Add(1)
	case errors.Is(err, ErrDeadlock):
		c.deadlocks.Add(1)
	case errors.Is(err, context.Canceled):
		c.cancelled.Add(1)
	default:
		c.otherErrors.Add(1)
	}
}

// Stats returns a snapshot of the counters and gauges.
func (m *Manager) Stats() Stats {
	st := Stats{
		GrantsShared:    m.stats.grantsShared.Load(),
		GrantsExclusive: m.stats.grantsExclusive.Load(),
		Timeouts:        m.stats.timeouts.Load(),
		WouldBlock:      m.stats.wouldBlock.Load(),
		Deadlocks:       m.stats.deadlocks.Load(),
		Cancelled:       m.stats.cancelled.Load(),
		OtherErrors:     m.stats.otherErrors.Load(),
		WaitSum:         time.Duration(m.stats.waitSumNanos.Load()),
		InfoWrites:      m.stats.infoWrites.Load(),
		Replaced:        m.stats.replaced.Load(),
		LostLockFiles:   m.stats.lost.Load(),
	}
	for i := range st.WaitCounts {
		st.WaitCounts[i] = m.stats.waitBuckets[i].Load()
	}
	st.Scans, st.Holders, st.Waiters = m.sched.counts()
	return st
}
