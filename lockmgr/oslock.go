package lockmgr

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/gofrs/flock"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Polling bounds for cross-process waits. flock(2) has no queue and a
// blocking flock cannot be cancelled, so waiters poll with LOCK_NB; the
// cap keeps the hand-over from another process around a millisecond.
const (
	backoffMin = 20 * time.Microsecond
	backoffMax = 1 * time.Millisecond
)

// osAcquire takes the flock of scan s in mode to, starting from from (0 or
// Shared, the latter being an upgrade). It returns the mode this process
// holds afterwards, also on failure: a failed upgrade may have lost the
// shared lock, because flock(2) drops the old lock before it tries the new
// one. Only the goroutine that set s.busy calls it.
func (m *Manager) osAcquire(ctx context.Context, s *scanState, from, to Mode, owner Owner, try bool) (Mode, error) {
	path := m.lockPath(s.id)
	if s.fl == nil {
		s.fl = flock.New(path, flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(m.cfg.fileMode))
	}
	cur := from
	var gate *flock.Flock // held exclusively by a waiting writer
	defer func() {
		if gate != nil {
			_ = gate.Unlock()
		}
	}()
	delay := backoffMin
	var timer *time.Timer
	for {
		var ok bool
		var err error
		switch {
		case to == Shared:
			ok, err = m.tryShared(s)
		case cur == Shared:
			ok, cur, err = m.tryUpgrade(s)
		default:
			ok, err = s.fl.TryLock()
			if !ok && err == nil && gate == nil && !try {
				gate = m.takeGate(s.id)
			}
		}
		if err != nil {
			_ = s.fl.Unlock()
			return 0, m.lockFileError(path, err)
		}
		if ok {
			same, err := sameFile(s.fl, path)
			if err != nil {
				_ = s.fl.Unlock()
				return 0, m.lockFileError(path, err)
			}
			if !same {
				// Somebody unlinked or replaced the lock file between our open
				// and our flock: the lock we got protects nothing. Start over
				// on whatever the path names now.
				_ = s.fl.Unlock()
				cur = 0
				m.log.WithField("path", path).Debug("lock file replaced while locking; retrying")
				continue
			}
			m.fixMode(s.fl, path)
			if m.cfg.infoFiles {
				m.writeInfo(s, to, owner)
			}
			return to, nil
		}
		if try {
			return cur, fmt.Errorf("%w: scan %s is locked by another process", ErrWouldBlock, s.id)
		}
		if timer == nil {
			timer = time.NewTimer(delay)
			defer timer.Stop()
		} else {
			timer.Reset(delay)
		}
		select {
		case <-ctx.Done():
			return cur, ctx.Err()
		case <-m.closeCh:
			return cur, ErrClosed
		case <-timer.C:
		}
		if delay *= 2; delay > backoffMax {
			delay = backoffMax
		}
	}
}

// tryShared takes the flock shared unless a writer of another process of
// ours waits for it (it holds the gate): then readers hold back so that
// writers are not starved.
func (m *Manager) tryShared(s *scanState) (bool, error) {
	g := flock.New(m.gatePath(s.id), flock.SetFlag(os.O_RDONLY))
	ok, err := g.TryRLock()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// No writer has ever waited here.
	case err != nil:
		// An unreadable gate only costs fairness, never correctness.
	case !ok:
		return false, nil
	default:
		defer g.Unlock()
	}
	return s.fl.TryRLock()
}

// takeGate marks a writer of this process as waiting, so that new readers
// of our other processes hold back. Failure to take it only costs
// fairness.
func (m *Manager) takeGate(id string) *flock.Flock {
	g := flock.New(m.gatePath(id), flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(m.cfg.fileMode))
	if ok, err := g.TryLock(); ok && err == nil {
		return g
	}
	return nil
}

// tryUpgrade converts this process's shared flock to exclusive. flock(2)
// removes the shared lock before it tries the exclusive one, even with
// LOCK_NB, so a failed attempt leaves us without any lock. To keep that
// window rare, the conversion is only tried when /proc/locks shows no
// other holder; if it still fails, the shared lock is taken again at once.
// The returned mode is what we hold afterwards.
func (m *Manager) tryUpgrade(s *scanState) (bool, Mode, error) {
	if others, err := m.othersHold(s); err == nil && others {
		return false, Shared, nil
	}
	ok, err := s.fl.TryLock()
	if ok || err != nil {
		return ok, Shared, err
	}
	// The shared lock is gone. gofrs/flock still believes it holds it, so
	// reset its state before taking it again.
	_ = s.fl.Unlock()
	ok, err = s.fl.TryRLock()
	if err != nil {
		return false, 0, err
	}
	if ok {
		if same, _ := sameFile(s.fl, m.lockPath(s.id)); same {
			return false, Shared, nil
		}
		_ = s.fl.Unlock()
	}
	m.log.WithFields(logrus.Fields{"scan": s.id}).Warn(
		"shared lock lost while upgrading: another process took the scan exclusively; data read before the upgrade may be stale")
	return false, 0, nil
}

// othersHold reports whether a process other than this one holds a flock on
// the file s.fl has open.
func (m *Manager) othersHold(s *scanState) (bool, error) {
	st, err := s.fl.Stat()
	if err != nil {
		return false, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false, errors.New("no stat_t")
	}
	locks, err := readProcLocks()
	if err != nil {
		return false, err
	}
	id := fileID{dev: uint64(sys.Dev), ino: sys.Ino}
	for _, pl := range locks {
		if pl.file == id && pl.kind == "FLOCK" && pl.pid != m.pid {
			return true, nil
		}
	}
	return false, nil
}

// lockFileError explains an unusable lock file, naming it.
func (m *Manager) lockFileError(path string, err error) error {
	var hint string
	switch {
	case errors.Is(err, syscall.EISDIR):
		hint = "it is a directory; remove it (rmdir) so a lock file can be created"
	case errors.Is(err, fs.ErrPermission):
		hint = "no permission to open it for writing; make the lock directory and its files group-writable for the users of the scan tree"
	case errors.Is(err, fs.ErrNotExist):
		hint = "the lock directory is gone; recreate it or restart"
	case errors.Is(err, syscall.ENOSPC):
		hint = "the file system is full"
	default:
		hint = "check the lock directory"
	}
	return fmt.Errorf("%w %s: %v (%s)", ErrLockFile, path, err, hint)
}

// fixMode gives a lock file we just created the configured mode, which
// the umask may have narrowed.
func (m *Manager) fixMode(fl *flock.Flock, path string) {
	st, err := fl.Stat()
	if err != nil || st.Mode().Perm() == m.cfg.fileMode {
		return
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) == os.Geteuid() {
		_ = os.Chmod(path, m.cfg.fileMode)
	}
}

// fileID is a file's identity: device and inode.
type fileID struct {
	dev uint64
	ino uint64
}

func (f fileID) zero() bool { return f == fileID{} }

func statID(st os.FileInfo) fileID {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return fileID{dev: uint64(sys.Dev), ino: sys.Ino}
	}
	return fileID{}
}

// sameFile reports whether path still names the file fl has open.
func sameFile(fl *flock.Flock, path string) (bool, error) {
	fst, err := fl.Stat()
	if err != nil {
		return false, err
	}
	var pst unix.Stat_t
	if err := unix.Stat(path, &pst); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	return statID(fst) == fileID{dev: pst.Dev, ino: pst.Ino}, nil
}
