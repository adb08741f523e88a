package lockmgr

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// maxIdleScans bounds the lock files the flock backend keeps open after
// their scan's last lease is released (see "Descriptors" in the package
// documentation): a working set of that many scans opens no lock file.
const maxIdleScans = 1024

// Manager hands out shared and exclusive scan locks. It is safe for
// concurrent use by many goroutines; see the package documentation for
// the protocol, its invariants and which type owns which state.
type Manager struct {
	root    string
	lockDir string
	dir     *lockDir // lockDir, opened without following a symbolic link
	cfg     config
	log     logrus.FieldLogger
	debug   bool
	pid     int

	sched *scheduler    // owners, leases and waiters in this process
	back  *flockBackend // holds across processes: lock, gate and .info files
	// cluster holds across hosts (WithEtcd), together with back; nil
	// without etcd.
	cluster *etcdBackend

	stats   counters
	closing atomic.Bool // Close was called
}

// New opens the scan root at root: it checks that root is a writable
// directory, creates the lock directory if needed and, unless turned off,
// purges stale lock files (those nobody holds). WithReadOnly skips all of
// that.
func New(root string, opts ...Option) (*Manager, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrRoot, root, err)
	}
	st, err := os.Stat(abs)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w %s: %w (give an existing scan database directory)", ErrRoot, abs, err)
	case !st.IsDir():
		return nil, fmt.Errorf("%w %s: not a directory (give the scan database directory)", ErrRoot, abs)
	}
	if cfg.readOnly {
		// Status only: nothing on disk may change, whatever else was asked.
		cfg.infoFiles, cfg.purgeStale = false, false
		if err := unix.Access(abs, unix.R_OK|unix.X_OK); err != nil {
			return nil, fmt.Errorf("%w %s: not readable by this user: %w", ErrRoot, abs, err)
		}
	} else if err := unix.Access(abs, unix.W_OK|unix.X_OK); err != nil {
		return nil, fmt.Errorf("%w %s: not writable by this user: %w (run as a user with write access)", ErrRoot, abs, err)
	}
	lockDir := cfg.lockDir
	if lockDir == "" {
		lockDir = filepath.Join(abs, LockDirName)
	}
	if lockDir, err = filepath.Abs(lockDir); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrLockFile, cfg.lockDir, err)
	}
	// A missing lock directory just means, for a read-only manager, that
	// nothing is locked; openLockDir refuses a symbolic link.
	if !cfg.readOnly {
		if err := ensureLockDir(lockDir, cfg.dirMode); err != nil {
			return nil, err
		}
	}
	dir, err := openLockDir(lockDir)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	m := &Manager{
		root:    abs,
		lockDir: lockDir,
		dir:     dir,
		cfg:     cfg,
		log:     cfg.log,
		debug:   debugEnabled(cfg.log),
		pid:     os.Getpid(),
	}
	m.back = newFlockBackend(dir, lockDir, cfg, cfg.log, m.pid, host, &m.stats, m.holdLost)
	var sb backend = m.back
	if cfg.etcd != nil && !cfg.readOnly {
		if m.cluster, err = m.startCluster(host); err != nil {
			dir.close()
			return nil, err
		}
		sb = &clusterBackend{local: m.back, etcd: m.cluster}
	} else if cfg.etcd != nil {
		m.cluster = newEtcdBackend(cfg.etcd, cfg.log, m.pid, host, m.holdLost) // status only
	}
	if !cfg.readOnly {
		m.back.watchNames() // at once: a daemon's descriptors are all open before it serves
	}
	m.sched = newScheduler(sb, cfg.timeout, cfg.log, m.debug)
	if cfg.purgeStale {
		removed, err := m.PurgeStale(false)
		for _, p := range removed {
			m.log.WithField("path", p).Info("removed stale lock file")
		}
		if err != nil {
			m.log.WithError(err).Warn("stale lock clean-up was incomplete")
		}
	}
	return m, nil
}

// ensureLockDir creates the lock directory if it is missing, and checks
// that it is a writable directory, not a symbolic link (which is never
// followed: see lockdir.go).
func ensureLockDir(dir string, mode os.FileMode) error {
	var st unix.Stat_t
	err := unix.Lstat(dir, &st)
	if err == nil {
		if err := checkLockDirStat(dir, &st); err != nil {
			return err
		}
		if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("%w: lock directory %s is not writable by this user (make it group-writable for the users of the scan tree): %w", ErrLockFile, dir, err)
		}
		return nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w: lock directory %s: %w", ErrLockFile, dir, err)
	}
	if err := unix.Mkdir(dir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%w: cannot create lock directory %s: %w", ErrLockFile, dir, err)
	} else if err == nil {
		// Chmod, not the umask, decides the mode: other users must be able
		// to create and open the lock files (plantdb opens them O_WRONLY).
		// Through a descriptor opened without following a link, so that
		// a symbolic link swapped in meanwhile gets no chmod.
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%w: cannot open lock directory %s: %w", ErrLockFile, dir, err)
		}
		defer unix.Close(fd)
		if err := unix.Fchmod(fd, uint32(mode.Perm())|unixModeBits(mode)); err != nil {
			return fmt.Errorf("%w: cannot set mode of lock directory %s: %w", ErrLockFile, dir, err)
		}
		return nil
	}
	return ensureLockDir(dir, mode) // created by somebody else meanwhile
}

// unixModeBits returns the setgid and sticky bits of m as chmod(2) wants
// them.
func unixModeBits(m os.FileMode) uint32 {
	var b uint32
	if m&os.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	if m&os.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	return b
}

func debugEnabled(l logrus.FieldLogger) bool {
	switch v := l.(type) {
	case *logrus.Logger:
		return v.IsLevelEnabled(logrus.DebugLevel)
	case *logrus.Entry:
		return v.Logger.IsLevelEnabled(logrus.DebugLevel)
	}
	return true
}

// Root returns the absolute scan root.
func (m *Manager) Root() string { return m.root }

// LockDir returns the absolute lock directory.
func (m *Manager) LockDir() string { return m.lockDir }

// Timeout returns the default wait used when a context has no deadline.
func (m *Manager) Timeout() time.Duration { return m.cfg.timeout }

// Paths of a scan's files. lockDir is absolute and clean and a valid id
// has no '/', so plain concatenation is enough (filepath.Join's Clean
// showed up in profiles of the uncontended path).
func (m *Manager) lockPath(id string) string { return m.lockDir + "/" + id + ".lock" }
func (m *Manager) infoPath(id string) string { return m.lockDir + "/" + id + ".info" }
func (m *Manager) gatePath(id string) string { return m.lockDir + "/" + id + ".gate" }

// holdLost is the backend's report of a hold that was (or may have
// been) lost while this process held it: counted in
// Stats.LostLockFiles and logged as a warning.
func (m *Manager) holdLost(id string, mode Mode, why string) {
	m.stats.lost.Add(1)
	m.log.WithFields(logrus.Fields{"scan": id, "mode": mode}).Warn(why)
}

// Close releases every lock this manager holds and wakes every waiter
// with ErrClosed (plantdb's cleanup_all_locks). Leases released later
// return ErrNotHeld.
func (m *Manager) Close() error {
	if !m.closing.CompareAndSwap(false, true) {
		return nil
	}
	if m.cluster != nil {
		m.cluster.shutdown()
	}
	m.back.shutdown()
	m.sched.close()
	m.back.close()
	if m.cluster != nil {
		m.cluster.close()
	}
	m.dir.close()
	return nil
}
