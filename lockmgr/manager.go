package lockmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofrs/flock"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Manager hands out shared and exclusive scan locks. It is safe for
// concurrent use by many goroutines; see the package documentation for
// the protocol and its invariants.
type Manager struct {
	root    string
	lockDir string
	cfg     config
	log     logrus.FieldLogger
	debug   bool
	pid     int

	mu      sync.Mutex // guards scans and scanState.refs
	scans   map[string]*scanState
	closed  atomic.Bool
	closeCh chan struct{}

	stats counters
}

// scanState is everything this process knows about one scan. Its fields
// are guarded by mu, except refs (guarded by Manager.mu) and fl, gate and
// infoID, which only the goroutine that set busy touches, or anybody
// while busy is false and mu is held.
type scanState struct {
	id   string
	refs int // acquire calls in flight + live leases; the entry is dropped at 0

	mu      sync.Mutex
	owners  map[ownerID]*ownerHold
	leases  map[*Lease]struct{}
	queue   []*waiter
	changed chan struct{} // closed and replaced on every state change
	busy    bool          // a goroutine is changing the OS-level lock
	osMode  Mode          // what this process holds with flock(2) right now
	osSince time.Time

	fl     *flock.Flock
	infoID fileID // the .info file this process wrote, if any
}

type ownerHold struct {
	shared, excl int
}

type waiter struct {
	owner   Owner
	oid     ownerID
	mode    Mode
	upgrade bool
	since   time.Time
}

// Lease is one granted lock. Release it exactly once.
type Lease struct {
	m        *Manager
	s        *scanState
	owner    Owner
	mode     Mode
	since    time.Time
	waited   time.Duration
	released bool // guarded by s.mu
}

// ScanID returns the scan the lease locks.
func (l *Lease) ScanID() string { return l.s.id }

// Mode returns the mode the lease was granted in.
func (l *Lease) Mode() Mode { return l.mode }

// Owner returns the owner the lease was granted to.
func (l *Lease) Owner() Owner { return l.owner }

// Waited returns how long the request waited before it was granted.
func (l *Lease) Waited() time.Duration { return l.waited }

// New opens the scan root at root: it checks that root is a writable
// directory, creates the lock directory if needed and, unless turned off,
// purges stale lock files (those nobody holds).
func New(root string, opts ...Option) (*Manager, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrRoot, root, err)
	}
	st, err := os.Stat(abs)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w %s: %v (give an existing scan database directory)", ErrRoot, abs, err)
	case !st.IsDir():
		return nil, fmt.Errorf("%w %s: not a directory (give the scan database directory)", ErrRoot, abs)
	}
	if err := unix.Access(abs, unix.W_OK|unix.X_OK); err != nil {
		return nil, fmt.Errorf("%w %s: not writable by this user: %v (run as a user with write access)", ErrRoot, abs, err)
	}
	lockDir := cfg.lockDir
	if lockDir == "" {
		lockDir = filepath.Join(abs, LockDirName)
	}
	if lockDir, err = filepath.Abs(lockDir); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrLockFile, cfg.lockDir, err)
	}
	if err := ensureLockDir(lockDir, cfg.dirMode); err != nil {
		return nil, err
	}
	m := &Manager{
		root:    abs,
		lockDir: lockDir,
		cfg:     cfg,
		log:     cfg.log,
		debug:   debugEnabled(cfg.log),
		pid:     os.Getpid(),
		scans:   make(map[string]*scanState),
		closeCh: make(chan struct{}),
	}
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

func ensureLockDir(dir string, mode os.FileMode) error {
	st, err := os.Stat(dir)
	if err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%w: %s is not a directory (move it away so the lock directory can be created)", ErrLockFile, dir)
		}
		if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("%w: lock directory %s is not writable by this user (make it group-writable for the users of the scan tree): %v", ErrLockFile, dir, err)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: lock directory %s: %v", ErrLockFile, dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: cannot create lock directory %s: %v", ErrLockFile, dir, err)
	} else if err == nil {
		// Chmod, not the umask, decides the mode: other users must be able
		// to open the lock files for writing (plantdb opens them O_WRONLY).
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("%w: cannot set mode of lock directory %s: %v", ErrLockFile, dir, err)
		}
	}
	return nil
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

func (m *Manager) lockPath(id string) string { return filepath.Join(m.lockDir, id+".lock") }
func (m *Manager) infoPath(id string) string { return filepath.Join(m.lockDir, id+".info") }
func (m *Manager) gatePath(id string) string { return filepath.Join(m.lockDir, id+".gate") }

// Acquire waits until owner holds scanID in mode, or until ctx is done,
// or until the default timeout passes when ctx has no deadline. It
// returns ErrTimeout, ErrDeadlock, ErrInvalidScanID, ErrClosed,
// ErrLockFile or the context's cancellation error, wrapped.
func (m *Manager) Acquire(ctx context.Context, scanID string, mode Mode, owner Owner) (*Lease, error) {
	return m.acquire(ctx, scanID, mode, owner, false)
}

// TryAcquire is Acquire without waiting: when the lock cannot be granted
// at once it returns ErrWouldBlock.
func (m *Manager) TryAcquire(scanID string, mode Mode, owner Owner) (*Lease, error) {
	return m.acquire(context.Background(), scanID, mode, owner, true)
}

func (m *Manager) acquire(ctx context.Context, scanID string, mode Mode, owner Owner, try bool) (*Lease, error) {
	if err := ValidateScanID(scanID); err != nil {
		return nil, err
	}
	if mode != Shared && mode != Exclusive {
		return nil, fmt.Errorf("lockmgr: invalid mode %v", mode)
	}
	if m.closed.Load() {
		return nil, ErrClosed
	}
	start := time.Now()
	s := m.ref(scanID)
	l, err := m.acquireRef(ctx, s, mode, owner, try, start)
	if err != nil {
		m.unref(s)
		m.stats.countError(err)
		if m.debug {
			m.log.WithFields(logrus.Fields{"scan": scanID, "mode": mode, "owner": owner.String(),
				"waited": time.Since(start)}).WithError(err).Debug("scan lock refused")
		}
		return nil, err
	}
	m.stats.countGrant(mode, l.waited)
	if m.debug {
		m.log.WithFields(logrus.Fields{"scan": scanID, "mode": mode, "owner": owner.String(),
			"waited": l.waited}).Debug("scan lock granted")
	}
	return l, nil
}

func (m *Manager) ref(id string) *scanState {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.scans[id]
	if s == nil {
		s = &scanState{
			id:      id,
			owners:  make(map[ownerID]*ownerHold),
			leases:  make(map[*Lease]struct{}),
			changed: make(chan struct{}),
		}
		m.scans[id] = s
	}
	s.refs++
	return s
}

func (m *Manager) unref(s *scanState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.refs--
	if s.refs == 0 && m.scans[s.id] == s {
		delete(m.scans, s.id)
	}
}

// acquireRef does the work of acquire on a referenced scan. On success the
// reference passes to the lease.
func (m *Manager) acquireRef(ctx context.Context, s *scanState, mode Mode, owner Owner, try bool, start time.Time) (*Lease, error) {
	oid := owner.id()
	if m.debug {
		m.log.WithFields(logrus.Fields{"scan": s.id, "mode": mode, "owner": owner.String()}).Debug("scan lock attempt")
	}
	s.mu.Lock()
	// Reentrant requests are granted at once: an exclusive holder may take
	// anything, a shared holder may take shared again.
	if oh := s.owners[oid]; oh != nil && (oh.excl > 0 || mode == Shared) {
		l := s.grantLocked(m, owner, mode, start)
		s.mu.Unlock()
		return l, nil
	}
	upgrade := s.owners[oid] != nil
	if upgrade {
		for _, w := range s.queue {
			if w.upgrade {
				s.mu.Unlock()
				return nil, fmt.Errorf("%w: scan %s: %s and %s both hold it shared and both want it exclusive",
					ErrDeadlock, s.id, w.owner, owner)
			}
		}
	}
	w := &waiter{owner: owner, oid: oid, mode: mode, upgrade: upgrade, since: start}
	s.queue = append(s.queue, w)

	if !try {
		if _, ok := ctx.Deadline(); !ok && m.cfg.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, m.cfg.timeout)
			defer cancel()
		}
	}
	for {
		if m.closed.Load() {
			s.dequeueLocked(w)
			s.mu.Unlock()
			return nil, ErrClosed
		}
		if s.admissibleLocked(w) {
			if s.osMode >= mode {
				s.dequeueLocked(w)
				l := s.grantLocked(m, owner, mode, start)
				s.mu.Unlock()
				return l, nil
			}
			if !s.busy {
				s.busy = true
				from := s.osMode
				s.mu.Unlock()
				got, err := m.osAcquire(ctx, s, from, mode, owner, try)
				s.mu.Lock()
				s.busy = false
				s.setOSMode(got)
				if err == nil && m.closed.Load() {
					err = ErrClosed
				}
				if err == nil {
					s.dequeueLocked(w)
					l := s.grantLocked(m, owner, mode, start)
					s.mu.Unlock()
					return l, nil
				}
				s.dequeueLocked(w)
				if len(s.owners) == 0 {
					m.osReleaseLocked(s)
				}
				s.mu.Unlock()
				return nil, m.waitError(ctx, err, s.id, mode, start)
			}
		}
		if try {
			s.dequeueLocked(w)
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: scan %s is held or wanted by another owner in this process", ErrWouldBlock, s.id)
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
			s.mu.Lock()
		case <-m.closeCh:
			s.mu.Lock()
		case <-ctx.Done():
			s.mu.Lock()
			s.dequeueLocked(w)
			s.mu.Unlock()
			return nil, m.waitError(ctx, ctx.Err(), s.id, mode, start)
		}
	}
}

// waitError turns the end of a wait into the documented errors.
func (m *Manager) waitError(ctx context.Context, err error, id string, mode Mode, start time.Time) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %s lock on scan %s not granted after %v: %w",
			ErrTimeout, mode, id, time.Since(start).Round(time.Millisecond), err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("waiting for %s lock on scan %s: %w", mode, id, err)
	}
	return err
}

// admissibleLocked says whether w may be granted as far as this process is
// concerned: compatible with the holders, and no writer ahead of a reader.
func (s *scanState) admissibleLocked(w *waiter) bool {
	if w.upgrade {
		return len(s.owners) == 1
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

func (s *scanState) dequeueLocked(w *waiter) {
	for i, q := range s.queue {
		if q == w {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			break
		}
	}
	s.broadcastLocked()
}

func (s *scanState) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *scanState) setOSMode(m Mode) {
	if m != s.osMode {
		s.osMode = m
		s.osSince = time.Now()
	}
}

func (s *scanState) grantLocked(m *Manager, owner Owner, mode Mode, start time.Time) *Lease {
	oid := owner.id()
	oh := s.owners[oid]
	if oh == nil {
		oh = &ownerHold{}
		s.owners[oid] = oh
	}
	if mode == Exclusive {
		oh.excl++
	} else {
		oh.shared++
	}
	now := time.Now()
	l := &Lease{m: m, s: s, owner: owner, mode: mode, since: now, waited: now.Sub(start)}
	s.leases[l] = struct{}{}
	return l
}

// Release gives the lock back. The last release of a scan in this process
// drops the flock and removes the .info file if it is still ours. A
// second Release of the same lease returns ErrNotHeld.
func (l *Lease) Release() error {
	if l == nil {
		return fmt.Errorf("%w: nil lease", ErrNotHeld)
	}
	m, s := l.m, l.s
	s.mu.Lock()
	if l.released {
		s.mu.Unlock()
		err := fmt.Errorf("%w: %s lease on scan %s of %s released twice", ErrNotHeld, l.mode, s.id, l.owner)
		m.log.WithError(err).Error("double release")
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
	if len(s.owners) == 0 && !s.busy {
		m.osReleaseLocked(s)
	}
	s.broadcastLocked()
	s.mu.Unlock()
	m.unref(s)
	if m.debug {
		m.log.WithFields(logrus.Fields{"scan": s.id, "mode": l.mode, "owner": l.owner.String(),
			"held": time.Since(l.since)}).Debug("scan lock released")
	}
	return nil
}

// osReleaseLocked drops this process's flock on s (a non-blocking call)
// and removes the .info file if it is still the one we wrote.
func (m *Manager) osReleaseLocked(s *scanState) {
	if s.osMode == 0 {
		return
	}
	if !s.infoID.zero() {
		m.removeInfoIfOurs(s.id, s.infoID)
		s.infoID = fileID{}
	}
	if s.fl != nil {
		if err := s.fl.Unlock(); err != nil {
			m.log.WithError(err).WithField("scan", s.id).Warn("unlocking scan lock file failed")
		}
	}
	s.setOSMode(0)
}

// Close releases every lock this manager holds and wakes every waiter
// with ErrClosed (plantdb's cleanup_all_locks). Leases released later
// return ErrNotHeld.
func (m *Manager) Close() error {
	if !m.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(m.closeCh)
	m.mu.Lock()
	scans := make([]*scanState, 0, len(m.scans))
	for _, s := range m.scans {
		scans = append(scans, s)
	}
	m.mu.Unlock()
	for _, s := range scans {
		s.mu.Lock()
		n := 0
		for l := range s.leases {
			l.released = true
			n++
		}
		s.leases = make(map[*Lease]struct{})
		s.owners = make(map[ownerID]*ownerHold)
		if !s.busy {
			m.osReleaseLocked(s)
		}
		s.broadcastLocked()
		s.mu.Unlock()
		for range n {
			m.unref(s)
		}
	}
	return nil
}
