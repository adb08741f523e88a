package mountcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"scanlockfs/fusefs"
	"scanlockfs/lockmgr"
)

// The mount lifecycle, without the command line: StartMount checks SOURCE
// and MOUNTPOINT (clearing a dead mount with Recover), starts the lock
// manager and mounts; Announce prints the readiness line and tells
// systemd (or, for the --daemon server, leaves the foreground); Serve
// waits for an unmount from outside or a signal; Shutdown unmounts;
// Wait returns once the server has stopped. Whichever way it stops, every
// scan lock is released and the counters are logged once.
//
// Signals (Serve): the first SIGINT/SIGTERM sends STOPPING=1 and starts
// Shutdown; a second one ends it at once.

// readyFormat is the one line mount prints on standard output once the
// mount is usable; scripts and tests wait for it.
const readyFormat = "scanlockfs: mounted %s on %s\n"

// unmountPatience is how long a signalled mount keeps retrying a busy
// unmount before it detaches lazily.
const unmountPatience = 3 * time.Second

// unmountRetryPause is the pause between two unmount attempts.
const unmountRetryPause = 100 * time.Millisecond

// Config is what a mount needs; the mount command fills it from its flags.
type Config struct {
	Source     string        // the scan database directory, as given
	Mountpoint string        // an empty directory outside Source, as given
	LockDir    string        // the lock directory; "" is Source/.locks
	Timeout    time.Duration // the longest wait of an open for its scan lock; 0 waits until interrupted
	ReadOnly   bool          // refuse writes with EROFS
	AllowOther bool          // let other users in (FUSE allow_other)
	InfoFiles  bool          // write SOURCE/.locks/SCAN.info for plantdb and status
	Recover    bool          // clear a dead FUSE mount on Mountpoint first
	DebugFUSE  bool          // log every FUSE request
	// NoPassthrough serves reads and writes through the daemon.
	NoPassthrough bool
	// The kernel's cache timeouts (fusefs.Options).
	EntryTimeout, AttrTimeout, NegativeTimeout time.Duration
	// Detach makes Announce leave the foreground (the --daemon server):
	// standard error goes to LogFile (or /dev/null, the log to syslog).
	Detach  bool
	LogFile *os.File
	// Log is the logger of the mount; nil discards the log.
	Log *logrus.Logger
	// Etcd configures the cluster lock (--etcd); no endpoints: none.
	Etcd EtcdSettings
}

// Mount is a running mount.
type Mount struct {
	Source     string // absolute
	Mountpoint string // absolute

	cfg  Config
	log  *logrus.Logger
	mgr  *lockmgr.Manager
	etcd *clientv3.Client // --etcd's client, closed after mgr; nil without
	srv  *fusefs.Server
	done chan struct{} // closed when the FUSE server has stopped

	closeOnce sync.Once
	closed    chan struct{} // closed once the lock manager is closed
}

// StartMount checks cfg, starts the lock manager and mounts. The mount
// serves once it returns; ctx bounds only the start.
func StartMount(ctx context.Context, cfg Config) (*Mount, error) {
	log := cfg.Log
	if log == nil {
		log = logrus.New()
		log.SetOutput(io.Discard)
	}
	source, mountpoint, err := checkMountDirs(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, exitf(ExitMount, "mount: %w", err)
	}
	mopts := []lockmgr.Option{lockmgr.WithTimeout(cfg.Timeout), lockmgr.WithLogger(log.WithField("component", "lockmgr")),
		lockmgr.WithInfoFiles(cfg.InfoFiles)}
	if cfg.LockDir != "" {
		mopts = append(mopts, lockmgr.WithLockDir(cfg.LockDir))
	}
	eopts, etcd, err := cfg.Etcd.lockOptions()
	if err != nil {
		return nil, err
	}
	mgr, err := lockmgr.New(source, append(mopts, eopts...)...)
	if err != nil {
		closeClient(etcd)
		return nil, exitf(clusterExit(err, ExitMount), "mount: %w", err)
	}
	srv, err := fusefs.Mount(mountpoint, fusefs.Options{
		Source: source, Manager: mgr, Timeout: cfg.Timeout, ReadOnly: cfg.ReadOnly, AllowOther: cfg.AllowOther,
		DebugFUSE: cfg.DebugFUSE, NoPassthrough: cfg.NoPassthrough, Logger: log,
		EntryTimeout: cfg.EntryTimeout, AttrTimeout: cfg.AttrTimeout, NegativeTimeout: cfg.NegativeTimeout,
	})
	if err != nil {
		_ = mgr.Close()
		closeClient(etcd)
		return nil, exitf(ExitMount, "mount: cannot mount %s on %s: %w%s", source, mountpoint, err, mountHint(err))
	}
	m := &Mount{Source: source, Mountpoint: mountpoint, cfg: cfg, log: log, mgr: mgr, etcd: etcd, srv: srv,
		done: make(chan struct{}), closed: make(chan struct{})}
	go func() {
		srv.Wait()
		close(m.done)
	}()
	log.WithFields(logrus.Fields{"source": source, "mountpoint": mountpoint, "timeout": cfg.Timeout,
		"read_only": cfg.ReadOnly, "info_files": cfg.InfoFiles, "pid": os.Getpid()}).Info("mounted")
	return m, nil
}

// checkMountDirs checks SOURCE and MOUNTPOINT and returns their absolute
// paths, clearing a dead mount on MOUNTPOINT first with cfg.Recover.
func checkMountDirs(cfg Config, log logrus.FieldLogger) (source, mountpoint string, err error) {
	if source, err = sourceDir(cfg.Source); err != nil {
		return "", "", err
	}
	if err := notAMount(source); err != nil {
		return "", "", err
	}
	mountpoint, err = mountpointDir(source, cfg.Mountpoint)
	if errors.Is(err, errDeadMount) && cfg.Recover {
		abs, _ := filepath.Abs(cfg.Mountpoint)
		if err := recoverDeadMount(abs, log); err != nil {
			return "", "", err
		}
		mountpoint, err = mountpointDir(source, cfg.Mountpoint)
	}
	return source, mountpoint, err
}

// ReadyLine is the readiness line Announce prints.
func (m *Mount) ReadyLine() string { return fmt.Sprintf(readyFormat, m.Source, m.Mountpoint) }

// Done is closed when the FUSE server has stopped (unmounted).
func (m *Mount) Done() <-chan struct{} { return m.done }

// Announce says that the mount serves: the readiness line on stdout and
// READY=1 to systemd; with Config.Detach, it leaves the foreground
// instead (the foreground process sends READY=1), and unmounts if it
// cannot.
func (m *Mount) Announce(stdout io.Writer) error {
	if !m.cfg.Detach {
		fmt.Fprint(stdout, m.ReadyLine())
		notifyReady(m.log, 0)
		return nil
	}
	if err := detachFromForeground(m.log, m.cfg.LogFile, m.ReadyLine()); err != nil {
		m.log.WithError(err).Error("cannot leave the foreground; unmounting")
		_ = m.srv.Unmount()
		_ = m.Wait()
		return exitf(ExitMount, "mount --daemon: %w", err)
	}
	return nil
}

// Serve waits until the mount is unmounted from outside, or a signal
// arrives on sigs: then it sends STOPPING=1 and shuts down, and a second
// signal stops it at once. It returns what Wait or Shutdown return.
func (m *Mount) Serve(sigs <-chan os.Signal) error {
	select {
	case <-m.done:
		notifyStopping(m.log)
		m.log.Info("unmounted from outside")
		return m.Wait()
	case sig := <-sigs:
		notifyStopping(m.log)
		m.log.WithField("signal", sig).Info("unmounting")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	return m.Shutdown(ctx)
}

// Shutdown unmounts. A mount with open files cannot be unmounted: it
// retries for unmountPatience, because close(2) returns before the kernel
// releases the file, then detaches the mount lazily and keeps serving the
// open files, with their locks, until they are closed. If ctx ends first
// it stops at once: the locks are released and it returns an ExitMount
// error; the open files of the detached mount fail once this process
// exits. Either way the lock manager is closed when it returns.
func (m *Mount) Shutdown(ctx context.Context) error {
	defer m.close()
	if m.unmountPatiently(ctx) {
		return m.Wait()
	}
	if err := m.srv.UnmountLazy(); err != nil {
		m.log.WithError(err).Error("lazy unmount failed; stop the programs using " + m.Mountpoint + ", or send another signal to stop anyway")
	} else {
		m.log.Warn("files are still open under " + m.Mountpoint + ": detached the mount; their locks are held until they are closed " +
			"(send another signal to stop at once)")
	}
	select {
	case <-m.done:
		return m.Wait()
	case <-ctx.Done():
		return m.stoppedBusy()
	}
}

// unmountPatiently retries the unmount for unmountPatience. It returns
// true once the server has stopped, false when it gave up or ctx ended.
func (m *Mount) unmountPatiently(ctx context.Context) bool {
	deadline := time.Now().Add(unmountPatience)
	for {
		err := m.srv.Unmount()
		if err == nil {
			<-m.done
			return true
		}
		select {
		case <-m.done:
			return true
		case <-ctx.Done():
			return false
		default:
		}
		if time.Now().After(deadline) {
			m.log.WithError(err).Warn("mount busy")
			return false
		}
		select {
		case <-m.done:
			return true
		case <-ctx.Done():
			return false
		case <-time.After(unmountRetryPause):
		}
	}
}

// stoppedBusy is the error of a shutdown cut short with files open.
func (m *Mount) stoppedBusy() error {
	return exitf(ExitMount, "mount: stopped while files of %s were still open; their programs now get errors (ENOTCONN)", m.Mountpoint)
}

// Wait returns once the server has stopped, or Shutdown has given up on
// it; every scan lock is released then.
func (m *Mount) Wait() error {
	select {
	case <-m.done:
	case <-m.closed:
		return nil
	}
	m.close()
	return nil
}

// close closes the lock manager, once, and logs the counters.
func (m *Mount) close() {
	m.closeOnce.Do(func() {
		defer close(m.closed)
		st := m.srv.Stats()
		ms := m.mgr.Stats()
		if err := m.mgr.Close(); err != nil {
			m.log.WithError(err).Warn("closing the lock manager")
		}
		closeClient(m.etcd)
		m.log.WithFields(logrus.Fields{
			"opens": st.Opens, "daemon_reads": st.Reads, "daemon_writes": st.Writes,
			"grants_shared": ms.GrantsShared, "grants_exclusive": ms.GrantsExclusive,
			"timeouts": ms.Timeouts, "would_block": ms.WouldBlock, "deadlocks": ms.Deadlocks,
			"cancelled": ms.Cancelled, "holders_left": ms.Holders, "waiters_left": ms.Waiters,
		}).Info("stopped; every scan lock released")
	})
}
