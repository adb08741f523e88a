package lockmgr

import "context"

// The backend seam. The scheduler (sched.go) decides, inside this
// process, which owner gets which scan when; a backend makes this process
// hold a scan against other processes (or hosts). There is one hold per
// scan per process, in the strongest mode any of the process's holders
// needs. The default backend is flockBackend (flock.go): plantdb's lock
// files. A cluster backend (etcd leases, say) implements the same two
// interfaces.

// backend hands out the per-scan handles the scheduler talks to.
type backend interface {
	// open returns the handle of scan id. The scheduler calls it when the
	// scan comes into use in this process and calls the handle's done
	// when nobody uses it any more; the backend may keep resources for
	// an idle scan (the flock backend keeps lock files open).
	open(id string) backendScan
	// shutdown ends every wait in the backend with ErrClosed and stops
	// its background work; holds are dropped afterwards with unlock.
	shutdown()
	// close frees what the backend keeps for idle scans.
	close()
}

// backendScan is the backend's handle of one scan. The scheduler calls
// lock and unlock from one goroutine at a time per scan (the one that set
// the scan busy), never with the scheduler's mutex held; writerWaiting
// may be called with it held and must neither block nor call back.
type backendScan interface {
	// lock makes this process hold the scan in req.to, starting from
	// req.from (0, or Shared for an upgrade). It returns the mode held
	// afterwards, also on failure: an upgrade that fails may have lost
	// the shared hold. ctx bounds the wait (its Done is only asked for
	// when the backend really waits); with req.try it does not wait and
	// fails with ErrWouldBlock.
	lock(ctx context.Context, req holdRequest) (Mode, error)
	// unlock drops this process's hold.
	unlock()
	// writerWaiting reports whether a writer elsewhere waits for the
	// scan, so that readers of this process hold back instead of joining
	// the hold they already have (cross-process fairness).
	writerWaiting() bool
	// waiting counts delta more requests of this process that wait for
	// the scan in mode, so that other processes can see them (the flock
	// backend's waiting records, waitrec.go). It may be called with the
	// scheduler's mutex held and must neither block nor call back.
	waiting(mode Mode, delta int)
	// done: the scheduler no longer uses the handle.
	done()
}

// holdRequest is what lock is asked to do.
type holdRequest struct {
	from, to Mode
	owner    Owner // the owner whose request takes the hold
	try      bool
	// loan: the hold is for leases granted under another process's hold
	// (loan.go); a shared one is taken in spite of a writer waiting
	// elsewhere, which that hold keeps waiting anyway.
	loan bool
	// orphaned, asked by an upgrade before each attempt, reports that
	// nobody in this process needs the shared hold being converted any
	// more; the backend then drops it and goes on as a plain exclusive
	// request. The scheduler lets nobody join the hold once it said so.
	orphaned func() bool
}

// lostFunc is how a backend reports that a hold of this process was (or
// may have been) lost while it was held: the flock backend when a lock
// file lost its name, a lease-based backend when its lease expired.
type lostFunc func(scanID string, mode Mode, why string)
