package fusefs

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"

	"scanlockfs/lockmgr"
)

// Errno values a program sees when a scan lock is refused. This is the
// only place where errors become errno values; go-fuse's ToErrno does
// not unwrap %w chains, so every error from lockmgr or from a system call
// passes through toErrno.
//
//	lockmgr.ErrTimeout       EBUSY      waited --timeout, the scan stayed locked
//	lockmgr.ErrWouldBlock    EAGAIN     O_NONBLOCK and the scan is locked
//	context.Canceled         EINTR      the caller was interrupted while waiting
//	lockmgr.ErrDeadlock      EDEADLK    two shared holders both asked for exclusive
//	lockmgr.ErrClosed        ESHUTDOWN  the mount is shutting down
//	EMFILE, ENFILE           itself     the daemon is out of descriptors (logged: raise LimitNOFILE)
//	lockmgr.ErrLockFile      EIO        the lock file cannot be used (logged, with its path)
//	lockmgr.ErrCluster       ENOLCK     --etcd: the cluster refused or failed the request (logged)
//	lockmgr.ErrHoldLost      ENOLCK     --etcd: the session ended while the open waited (logged)
//	syscall.Errno            itself     from the backing file system
//	anything else            EIO        logged as a bug
func toErrno(log logrus.FieldLogger, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	switch {
	case errors.Is(err, lockmgr.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		log.WithError(err).Warn("scan lock not granted before the timeout: EBUSY")
		return syscall.EBUSY
	case errors.Is(err, lockmgr.ErrWouldBlock):
		log.WithError(err).Debug("scan lock busy: EAGAIN")
		return syscall.EAGAIN
	case errors.Is(err, context.Canceled):
		log.WithError(err).Debug("interrupted while waiting for scan lock: EINTR")
		return syscall.EINTR
	case errors.Is(err, lockmgr.ErrDeadlock):
		log.WithError(err).Warn("scan lock upgrade would deadlock: EDEADLK")
		return syscall.EDEADLK
	case errors.Is(err, lockmgr.ErrClosed):
		log.WithError(err).Info("lock manager closed: ESHUTDOWN")
		return syscall.ESHUTDOWN
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		// Not the lock file's fault: the program gets the errno it would
		// get from a plain file system at the limit, and the log says what
		// to change.
		e := syscall.EMFILE
		if errors.Is(err, syscall.ENFILE) {
			e = syscall.ENFILE
		}
		log.WithError(err).Error("too many open files: raise LimitNOFILE / ulimit -n of the mount")
		return e
	case errors.Is(err, lockmgr.ErrCluster), errors.Is(err, lockmgr.ErrHoldLost):
		log.WithError(err).Error("cluster scan lock unavailable: ENOLCK")
		return syscall.ENOLCK
	case errors.Is(err, lockmgr.ErrLockFile):
		// The message names the lock file and says what to do.
		log.WithError(err).Error("scan lock file unusable: EIO")
		return syscall.EIO
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	log.WithError(err).Error("unexpected error: EIO")
	return syscall.EIO
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
