package lockmgr

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Polling bounds for cross-process waits. flock(2) has no queue and a
// blocking flock cannot be cancelled, so waiters poll with LOCK_NB; the
// cap keeps the hand-over from another process under a millisecond.
const (
	backoffMin = 20 * time.Microsecond
	backoffMax = 500 * time.Microsecond
)

// testHookOpened, when set by a test, runs after the lock file was opened
// and before it is locked: the window in which another process may unlink
// or replace it.
var testHookOpened func(path string)

// osAcquire takes the flock of scan s in mode to, starting from from (0 or
// Shared, the latter being an upgrade). It returns the mode this process
// holds afterwards, also on failure: a failed upgrade may have lost the
// shared lock, because flock(2) drops the old lock before it tries the new
// one. Only the goroutine that set s.busy calls it.
func (m *Manager) osAcquire(wc *lazyCtx, s *scanState, from, to Mode, try bool) (Mode, error) {
	path := s.lockPath
	cur := from
	gate := -1 // S.gate, with our OFD lock on it while a writer of ours waits
	defer func() {
		if gate >= 0 {
			unix.Close(gate) // which drops its lock
		}
	}()
	delay := backoffMin
	var timer *time.Timer
	for {
		if s.fd < 0 {
			if err := m.openLockFile(s, path); err != nil {
				return 0, err
			}
			if testHookOpened != nil {
				testHookOpened(path)
			}
		}
		var ok bool
		var err error
		if cur == Shared && m.dropOrphanShared(s) {
			cur = 0
		}
		switch {
		case to == Shared:
			ok, err = m.tryShared(s)
		case cur == Shared:
			ok, cur, err = m.tryUpgrade(s, path)
		default:
			ok, err = flockNB(s.fd, unix.LOCK_EX)
		}
		if to == Exclusive && !ok && err == nil && gate < 0 && !try {
			gate = m.takeGate(s.id)
		}
		if err != nil {
			closeLockFile(s)
			return 0, m.lockFileError(path, err)
		}
		if ok {
			same, err := m.verifyLocked(wc, s, path, to)
			if err != nil {
				closeLockFile(s)
				return 0, m.lockFileError(path, err)
			}
			if same {
				return to, nil
			}
			// Somebody unlinked or replaced the lock file between our open
			// and our flock (or just after, see awaitPlantdbRelease): the
			// lock we got protects nothing. Start over on whatever the path
			// names now.
			closeLockFile(s)
			cur = 0
			m.stats.replaced.Add(1)
			m.log.WithField("path", path).Debug("lock file replaced while locking; retrying")
			continue
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
		ctx := wc.get()
		select {
		case <-ctx.Done():
			return cur, ctx.Err()
		case <-m.closeCh:
			return cur, ErrClosed
		case <-timer.C:
		}
		delay = min(delay*2, backoffMax)
	}
}

// openLockFile opens (creating it if needed) the lock file of s: only a
// regular file with one link, opened without following a symbolic link
// and checked before it is opened for real (see lockdir.go), so that a
// FIFO, a device or a hard link planted in the shared lock directory is
// refused, naming it, instead of blocking, acting or merging two scans.
// It is read-only when we may not write it (a file created by another
// user with a narrower mode): on local file systems flock(2) works on
// any descriptor, but where it is emulated with fcntl locks (NFS) an
// exclusive lock needs write access.
func (m *Manager) openLockFile(s *scanState, path string) error {
	if err := m.dir.refresh(); err != nil {
		return err
	}
	fd, st, err := m.dir.openFile(s.id+".lock", unix.O_RDWR, true, uint32(m.cfg.fileMode), true)
	if err != nil {
		return m.lockFileError(path, err)
	}
	m.fixMode(fd, &st)
	s.fd, s.fid = fd, fileID{dev: st.Dev, ino: st.Ino}
	return nil
}

// fixModeFD gives a file we created the configured mode, which the umask
// may have narrowed: other users of the scan tree must be able to open it
// for writing.
func (m *Manager) fixModeFD(fd int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil {
		m.fixMode(fd, &st)
	}
}

// fixMode is fixModeFD with the file's status already at hand.
func (m *Manager) fixMode(fd int, st *unix.Stat_t) {
	if st.Uid == uint32(os.Geteuid()) && os.FileMode(st.Mode&0o7777) != m.cfg.fileMode {
		_ = unix.Fchmod(fd, uint32(m.cfg.fileMode))
	}
}

// closeLockFile closes the lock file of s, which drops any flock on it,
// and the gate with it (the lock file is closed when it was replaced, and
// PurgeStale unlinks a gate only with its lock file).
func closeLockFile(s *scanState) {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd, s.fid = -1, fileID{}
	}
	closeGate(s)
}

// closeGate closes the gate of s if it is open. An idle scan keeps its
// lock file open but not its gate: only in-use scans need the fast test.
func closeGate(s *scanState) {
	s.gateMu.Lock()
	if s.gateFD >= 0 {
		unix.Close(s.gateFD)
		s.gateFD = -1
	}
	s.gateMu.Unlock()
}

// flockNB tries flock(fd, how|LOCK_NB): false without error when the lock
// is held elsewhere.
func flockNB(fd, how int) (bool, error) {
	for {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		}
		return false, err
	}
}

// verifyLocked reports whether the lock file path still names the file
// we have just locked, after waiting out a plantdb process that may be
// about to unlink it. The order matters: plantdb unlinks S.lock before
// S.info, so once we have seen no releasing plantdb's S.info, a path
// check that follows sees any unlink of that release.
func (m *Manager) verifyLocked(wc *lazyCtx, s *scanState, path string, mode Mode) (bool, error) {
	m.awaitPlantdbRelease(wc, s, mode)
	return m.stillNamed(s, path)
}

// stillNamed reports whether path names the file s.fd has open. The path,
// not the directory's descriptor: a lock directory replaced meanwhile
// (removed and created again) is then noticed, and the file opened anew
// in the new one. A symbolic link is never the same file.
func (m *Manager) stillNamed(s *scanState, path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	return (fileID{dev: st.Dev, ino: st.Ino}) == s.fid, nil
}

// checkStillNamed runs before a release: if the lock file lost its name
// while we held it, another process may have locked a new file under that
// name meanwhile, and exclusion was not guaranteed. Only a process outside
// this protocol (plantdb's release, plantdb's stale clean-up) does that.
func (m *Manager) checkStillNamed(s *scanState) {
	if same, err := m.stillNamed(s, s.lockPath); err == nil && !same {
		m.stats.lost.Add(1)
		m.log.WithFields(logrus.Fields{"scan": s.id, "mode": s.osMode}).Warn(
			"the lock file was removed or replaced while this process held it (a plantdb process unlinks it when it releases); " +
				"another process may have locked the scan at the same time")
	}
}

// tryShared takes the flock shared unless a writer of another process of
// ours waits for it (it holds the gate): then readers hold back so that
// writers are not starved.
func (m *Manager) tryShared(s *scanState) (bool, error) {
	if m.writerWaiting(s) {
		return false, nil
	}
	return flockNB(s.fd, unix.LOCK_SH)
}

// The gate is S.gate, a file of its own, on which a waiting writer holds
// an OFD read lock (fcntl F_OFD_SETLK) on the first byte, and which
// readers test with F_OFD_GETLK. A test takes no lock, so readers never
// get in the way of a writer setting the gate (as they did when it was a
// flock that readers took shared to probe it), and several writers can
// hold it at once. It is a separate file because where flock is emulated
// with fcntl locks (NFS), an fcntl lock on S.lock would conflict with the
// writers' own flock.

// writerWaiting reports whether a writer of another process of ours (or
// of this one) holds the gate of scan s. Errors only cost fairness,
// never correctness. It is on the path of every shared acquisition: the
// gate is looked for with a stat (a failed open costs more), and once it
// exists it stays open while the scan is in use, so that the test is one
// fcntl.
func (m *Manager) writerWaiting(s *scanState) bool {
	s.gateMu.Lock()
	defer s.gateMu.Unlock()
	if s.gateFD < 0 {
		var st unix.Stat_t
		if unix.Lstat(s.gatePath, &st) != nil {
			return false // no writer has ever waited here
		}
		g, _, err := m.dir.openFile(s.id+".gate", unix.O_RDONLY, false, 0, false)
		if err != nil {
			return false
		}
		s.gateFD = g
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 1}
	if unix.FcntlFlock(uintptr(s.gateFD), unix.F_OFD_GETLK, &lk) != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// takeGate marks a writer of this process as waiting, so that new readers
// of our other processes hold back. It returns the gate's descriptor,
// whose closing removes the mark, or -1: failure only costs fairness.
func (m *Manager) takeGate(id string) int {
	g, _, err := m.dir.openFile(id+".gate", unix.O_RDWR, true, uint32(m.cfg.fileMode), true)
	if err != nil {
		return -1
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 1}
	if unix.FcntlFlock(uintptr(g), unix.F_OFD_SETLK, &lk) != nil {
		unix.Close(g)
		return -1
	}
	m.fixModeFD(g)
	return g
}

// tryUpgrade converts this process's shared flock to exclusive. flock(2)
// removes the shared lock before it tries the exclusive one, even with
// LOCK_NB, so a failed attempt leaves us without any lock. To keep that
// window rare, the conversion is only tried when /proc/locks shows no
// other holder; if it still fails, the shared lock is taken again at once.
// The returned mode is what we hold afterwards.
func (m *Manager) tryUpgrade(s *scanState, path string) (bool, Mode, error) {
	if others, err := m.othersHold(s.fid); err == nil && others {
		return false, Shared, nil
	}
	ok, err := flockNB(s.fd, unix.LOCK_EX)
	if ok || err != nil {
		return ok, Shared, err
	}
	// The shared lock is gone: take it again.
	ok, err = flockNB(s.fd, unix.LOCK_SH)
	if err != nil {
		return false, 0, err
	}
	if ok {
		if same, _ := m.stillNamed(s, path); same {
			return false, Shared, nil
		}
		_ = unix.Flock(s.fd, unix.LOCK_UN)
	}
	m.log.WithFields(logrus.Fields{"scan": s.id}).Warn(
		"shared lock lost while upgrading: another process took the scan exclusively; data read before the upgrade may be stale")
	return false, 0, nil
}

// dropOrphanShared is called by the busy goroutine of an upgrade before
// each attempt. If the shared hold being converted was released meanwhile
// and no owner holds the scan any more, it drops the process's shared
// flock (and our .info with it) and reports true: the request goes on as
// a plain exclusive one. Kept, that orphan flock would make two processes
// upgrading at once wait for each other until both time out.
func (m *Manager) dropOrphanShared(s *scanState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.owners) > 0 || s.info.busy || s.osMode != Shared {
		return false
	}
	// Nobody can join the flock meanwhile: holders are gone, and new
	// readers queue behind this exclusive request.
	m.osReleaseLocked(s)
	return true
}

// othersHold reports whether a process other than this one holds a flock
// on file id.
func (m *Manager) othersHold(id fileID) (bool, error) {
	locks, err := readProcLocks()
	if err != nil {
		return false, err
	}
	for _, pl := range locks {
		if pl.file == id && pl.kind == "FLOCK" && pl.pid != m.pid {
			return true, nil
		}
	}
	return false, nil
}

// lockFileError explains an unusable lock file, naming it and saying
// what to do. It wraps both ErrLockFile and the cause.
func (m *Manager) lockFileError(path string, err error) error {
	if errors.Is(err, ErrLockFile) {
		return err
	}
	var bad *badFileError
	if errors.As(err, &bad) {
		fix := "remove it (once you have checked it holds nothing of value) so that a lock file can be created"
		if bad.errno == unix.EMLINK {
			fix = "another name in or outside the lock directory is the same file; remove this name (rm " + path +
				") while nobody holds the scan, and a lock file of its own is created"
		}
		return fmt.Errorf("%w %s: %w (%s)", ErrLockFile, path, err, fix)
	}
	var hint string
	switch {
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		hint = "too many open files: raise LimitNOFILE / ulimit -n"
	case errors.Is(err, syscall.ELOOP):
		hint = "remove the symbolic link so a lock file can be created"
	case errors.Is(err, fs.ErrPermission):
		hint = "no permission to create or open it; make the lock directory group-writable for the users of the scan tree"
	case errors.Is(err, fs.ErrNotExist):
		hint = "the lock directory is gone; recreate it or restart"
	case errors.Is(err, syscall.ENOSPC):
		hint = "the file system is full"
	default:
		hint = "check the lock directory"
	}
	return fmt.Errorf("%w %s: %w (%s)", ErrLockFile, path, err, hint)
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
