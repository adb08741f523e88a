package fusefs

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"

	"scanlockfs/lockmgr"
)

// toErrno maps an error to the errno a program sees. This is the only
// place where errors become errno values; go-fuse's ToErrno does not
// unwrap %w chains, so every error from lockmgr or from a system call
// passes through toErrno: the refusals of a scan lock first (lockErrnos,
// in order), then an errno of the backing file system as it is, and
// anything else is EIO, logged as a bug.
func toErrno(log logrus.FieldLogger, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, r := range lockErrnos {
		for _, target := range r.is {
			if errors.Is(err, target) {
				e := r.errno
				if e == 0 {
					e = target.(syscall.Errno)
				}
				log.WithError(err).Log(r.level, r.msg)
				return e
			}
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	log.WithError(err).Error("unexpected error: EIO")
	return syscall.EIO
}

// lockErrnos are the errno values a program sees when a scan lock is
// refused, checked in this order, and how loudly the daemon logs each.
// An errno of 0 passes the matched errno on as it is.
var lockErrnos = []struct {
	is    []error
	errno syscall.Errno
	level logrus.Level
	msg   string
}{
	// waited --timeout, the scan stayed locked
	{[]error{lockmgr.ErrTimeout, context.DeadlineExceeded}, syscall.EBUSY, logrus.WarnLevel, "scan lock not granted before the timeout: EBUSY"},
	// O_NONBLOCK and the scan is locked
	{[]error{lockmgr.ErrWouldBlock}, syscall.EAGAIN, logrus.DebugLevel, "scan lock busy: EAGAIN"},
	// the caller was interrupted while waiting
	{[]error{context.Canceled}, syscall.EINTR, logrus.DebugLevel, "interrupted while waiting for scan lock: EINTR"},
	// two shared holders both asked for exclusive
	{[]error{lockmgr.ErrDeadlock}, syscall.EDEADLK, logrus.WarnLevel, "scan lock upgrade would deadlock: EDEADLK"},
	// the mount is shutting down
	{[]error{lockmgr.ErrClosed}, syscall.ESHUTDOWN, logrus.InfoLevel, "lock manager closed: ESHUTDOWN"},
	// The daemon is out of descriptors. Not the lock file's fault: the
	// program gets the errno it would get from a plain file system at
	// the limit, and the log says what to change.
	{[]error{syscall.ENFILE, syscall.EMFILE}, 0, logrus.ErrorLevel, "too many open files: raise LimitNOFILE / ulimit -n of the mount"},
	// --etcd: the cluster refused or failed the request, or the session
	// ended while the open waited
	{[]error{lockmgr.ErrCluster, lockmgr.ErrHoldLost}, syscall.ENOLCK, logrus.ErrorLevel, "cluster scan lock unavailable: ENOLCK"},
	// the lock file cannot be used; the message names it and says what to do
	{[]error{lockmgr.ErrLockFile}, syscall.EIO, logrus.ErrorLevel, "scan lock file unusable: EIO"},
}

// errnoOf is toErrno for a lock request of a program: it also counts the
// errno the program gets, for MOUNTPOINT/.locks/metrics.
func (fsys *fileSystem) errnoOf(log logrus.FieldLogger, err error) syscall.Errno {
	e := toErrno(log, err)
	fsys.errnos.add(e)
	return e
}

// errnoCounts counts errno values by number (Linux's are below 134).
type errnoCounts struct {
	n [256]atomic.Uint64
}

func (c *errnoCounts) add(e syscall.Errno) {
	if e > 0 && int(e) < len(c.n) {
		c.n[e].Add(1)
	}
}

// snapshot returns the counts that are not zero.
func (c *errnoCounts) snapshot() map[syscall.Errno]uint64 {
	m := map[syscall.Errno]uint64{}
	for i := range c.n {
		if v := c.n[i].Load(); v > 0 {
			m[syscall.Errno(i)] = v
		}
	}
	return m
}
