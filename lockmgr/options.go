package lockmgr

import (
	"io"
	"os"
	"time"

	"github.com/sirupsen/logrus"
)

// Default values of the options.
const (
	DefaultTimeout  = 30 * time.Second
	DefaultFileMode = os.FileMode(0o664)
	DefaultDirMode  = os.ModeSetgid | 0o775 // 02775
	// DefaultInfoDelay is how long a flock must have been held before its
	// .info file is written (see WithInfoDelay).
	DefaultInfoDelay = 2 * time.Millisecond
	// LockDirName is the lock directory under the scan root, as in plantdb.
	LockDirName = ".locks"
)

// Option configures a Manager.
type Option func(*config)

type config struct {
	lockDir    string
	timeout    time.Duration
	infoFiles  bool
	infoDelay  time.Duration
	fileMode   os.FileMode
	dirMode    os.FileMode
	log        logrus.FieldLogger
	purgeStale bool
	readOnly   bool
	etcd       *EtcdConfig // WithEtcd; nil: local flocks only
}

func defaultConfig() config {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return config{
		timeout:    DefaultTimeout,
		infoFiles:  true,
		infoDelay:  DefaultInfoDelay,
		fileMode:   DefaultFileMode,
		dirMode:    DefaultDirMode,
		log:        l,
		purgeStale: true,
	}
}

// WithLockDir puts the lock files in dir instead of ROOT/.locks. Every
// process sharing a scan tree must use the same directory.
func WithLockDir(dir string) Option { return func(c *config) { c.lockDir = dir } }

// WithTimeout sets how long Acquire waits when its context has no
// deadline (default 30 s, as in plantdb). Zero or less means no default
// timeout: wait until the context is done.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithInfoFiles turns the <scan>.info metadata files on (default) or off.
func WithInfoFiles(on bool) Option { return func(c *config) { c.infoFiles = on } }

// WithInfoDelay sets how long this process must have held a scan's
// flock before the .info file is written (default DefaultInfoDelay). The
// file is written in the background and removed before the flock is
// dropped, so a lock held for less never costs a file creation; see
// "Metadata" in the package documentation. Zero or less writes it before
// Acquire returns.
func WithInfoDelay(d time.Duration) Option { return func(c *config) { c.infoDelay = d } }

// WithFileMode sets the mode of the lock and info files this manager
// creates (default 0664). The mode is applied exactly, not through the
// umask, so that other users of the scan tree can open them for writing.
func WithFileMode(m os.FileMode) Option { return func(c *config) { c.fileMode = m.Perm() } }

// WithDirMode sets the mode of the lock directory when this manager
// creates it (default 02775: group-writable, and setgid so that files in
// it inherit the directory's group). The setgid and sticky bits may be
// given as os.ModeSetgid and os.ModeSticky or in octal (0o2000, 0o1000).
func WithDirMode(m os.FileMode) Option {
	if m&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return func(c *config) { c.dirMode = m & (os.ModePerm | os.ModeSetgid | os.ModeSticky) }
}

// WithLogger sends the manager's log to l. Every attempt, grant and
// release is logged at debug level.
func WithLogger(l logrus.FieldLogger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithStaleCleanup turns the purge of stale lock files at New on
// (default) or off.
func WithStaleCleanup(on bool) Option { return func(c *config) { c.purgeStale = on } }

// WithReadOnly opens the manager for status queries only (List, Status,
// ReadInfo), by users who may merely read the scan tree: New then needs
// only read access, and neither creates the lock directory nor purges nor
// writes anything; Acquire and TryAcquire fail with ErrReadOnly.
func WithReadOnly(on bool) Option { return func(c *config) { c.readOnly = on } }
