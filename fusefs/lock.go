package fusefs

import (
	"context"
	"errors"
	"slices"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"scanlockfs/lockmgr"
)

// lockReq is one request for scan locks on behalf of a FUSE request.
type lockReq struct {
	op       string // FUSE operation, for the log
	path     string // path relative to the mount, for the log and status
	mode     lockmgr.Mode
	nonblock bool // O_NONBLOCK: fail with EAGAIN instead of waiting
	// beforeWait, if set, runs only when the request would wait (or
	// fail with EAGAIN): an errno it returns refuses the request at
	// once, instead of after the wait.
	beforeWait func() syscall.Errno
}

// refusedEarly is a request that beforeWait refused: not a refusal of
// the lock, so it is not counted as one.
type refusedEarly struct{ errno syscall.Errno }

func (e refusedEarly) Error() string { return e.errno.Error() }

// lock takes req.mode on every scan in scans ("" entries are skipped,
// duplicates taken once) for the process that made the request. Scans are
// taken in sorted order, so that two requests that both need the same
// two scans cannot each hold one and wait for the other. On failure
// nothing stays held. The caller releases the leases with unlock.
func (fsys *fileSystem) lock(ctx context.Context, req lockReq, scans ...string) ([]*lockmgr.Lease, syscall.Errno) {
	ids := make([]string, 0, len(scans))
	for _, s := range scans {
		if s != "" {
			ids = append(ids, s)
		}
	}
	if len(ids) == 0 {
		return nil, 0
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)

	owner := callerOwner(ctx, req.path)
	if fsys.debug {
		fsys.reqLog(req, ids[0], owner).WithField("scans", ids).Debug("scan lock wanted")
	}
	if !req.nonblock && fsys.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fsys.timeout)
		defer cancel()
	}
	leases := make([]*lockmgr.Lease, 0, len(ids))
	for _, id := range ids {
		l, err := fsys.lockOne(ctx, req, id, owner)
		if err != nil {
			fsys.unlock(req, leases)
			if e := (refusedEarly{}); errors.As(err, &e) {
				return nil, e.errno
			}
			return nil, fsys.errnoOf(fsys.reqLog(req, id, owner), err)
		}
		leases = append(leases, l)
		if fsys.debug {
			fsys.reqLog(req, id, owner).WithFields(logrus.Fields{"waited": l.Waited(), "as": l.Owner().String()}).Debug("scan lock taken")
		}
	}
	return leases, 0
}

// lockOne takes scan id for owner. The uncontended path is one request
// that does not wait; only a request that would wait runs
// req.beforeWait, consults the rules of a holder's family (inherit.go),
// and then waits, or is granted as the holder it acts as.
func (fsys *fileSystem) lockOne(ctx context.Context, req lockReq, id string, owner lockmgr.Owner) (*lockmgr.Lease, error) {
	l, err := fsys.mgr.TryAcquire(id, req.mode, owner, lockmgr.Probe())
	if !errors.Is(err, lockmgr.ErrWouldBlock) && !errors.Is(err, lockmgr.ErrDeadlock) {
		return l, err
	}
	if req.beforeWait != nil {
		if errno := req.beforeWait(); errno != 0 {
			return nil, refusedEarly{errno}
		}
	}
	o, opts := fsys.actingAs(req, id, owner)
	if req.nonblock {
		return fsys.mgr.TryAcquire(id, req.mode, o, opts...)
	}
	opts = append(opts, lockmgr.CancelGrace(interruptGrace), lockmgr.RetryDeadlock(deadlockGrace))
	return fsys.mgr.Acquire(ctx, id, req.mode, o, opts...)
}

// deadlockGrace is how long a request refused with ErrDeadlock is tried
// again before the program gets EDEADLK. The kernel sends RELEASE
// asynchronously after close(2): a process that closed a file it read and
// at once opens one for writing may still hold its shared lease for a
// moment, and two such processes look like two upgraders waiting for each
// other. A real deadlock only costs this delay.
const deadlockGrace = 100 * time.Millisecond

// interruptGrace is how long a lock request goes on waiting after the
// kernel interrupted it. Go programs get spurious interrupts (the runtime
// preempts threads with SIGURG) and raw syscalls do not retry EINTR, so a
// request that is granted within this grace succeeds instead; Ctrl-C on a
// program that really waits costs this much more before EINTR.
var interruptGrace = 20 * time.Millisecond // a variable for tests

// unlock releases leases taken by lock, in reverse order.
func (fsys *fileSystem) unlock(req lockReq, leases []*lockmgr.Lease) {
	for i := len(leases) - 1; i >= 0; i-- {
		fsys.release(req, leases[i])
	}
}

// release gives one lease back. A failure here is a bug (double release)
// or a closed manager; it is logged, never returned to the caller.
func (fsys *fileSystem) release(req lockReq, l *lockmgr.Lease) {
	if l == nil {
		return
	}
	if err := l.Release(); err != nil {
		fsys.reqLog(req, l.ScanID(), l.Owner()).WithError(err).Error("releasing scan lock failed")
		return
	}
	if fsys.debug {
		fsys.reqLog(req, l.ScanID(), l.Owner()).Debug("scan lock released")
	}
}

func (fsys *fileSystem) reqLog(req lockReq, scan string, owner lockmgr.Owner) logrus.FieldLogger {
	return fsys.log.WithFields(logrus.Fields{
		"op": req.op, "path": req.path, "scan": scan, "mode": req.mode, "pid": owner.PID,
	})
}

// underLock is how every operation of a node locks: it takes req.mode on
// scans, then runs fn, which resolves what it works on on SOURCE only now
// (a resolution made before a lock wait may name something else by
// then). The leases are released when fn returns, unless fn kept them:
// an open hands them to its file handle, which releases them on RELEASE.
func (fsys *fileSystem) underLock(ctx context.Context, req lockReq, scans []string, fn func(leases []*lockmgr.Lease) (kept bool, errno syscall.Errno)) syscall.Errno {
	leases, errno := fsys.lock(ctx, req, scans...)
	if errno != 0 {
		return errno
	}
	fsys.notify.granted(ctx) // notify_own.go
	kept, errno := fn(leases)
	if !kept || errno != 0 {
		fsys.unlock(req, leases)
	}
	return errno
}

// exclusive runs a handle-less change of n (setattr, setxattr...) with
// scans locked exclusively for its duration.
func (n *node) exclusive(ctx context.Context, op, path string, scans []string, fn func() syscall.Errno) syscall.Errno {
	req := lockReq{op: op, path: path, mode: lockmgr.Exclusive}
	return n.fsys.underLock(ctx, req, scans, func([]*lockmgr.Lease) (bool, syscall.Errno) {
		return false, fn()
	})
}

// change runs a change of an entry of directory n (mkdir, unlink,
// rename...) with scans locked exclusively, on a descriptor of n resolved
// and checked once the locks are granted.
func (n *node) change(ctx context.Context, op, path string, scans []string, fn func(dfd int) syscall.Errno) syscall.Errno {
	return n.exclusive(ctx, op, path, scans, func() syscall.Errno {
		dfd, done, errno := n.openDir()
		if errno != 0 {
			return errno
		}
		defer done()
		return fn(dfd)
	})
}
