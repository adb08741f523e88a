package fusefs

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Server is a mounted scanlockfs.
type Server struct {
	srv        *fuse.Server
	fsys       *fileSystem
	mountpoint string
	direct     bool
}

// Mount mounts opts.Source on mountpoint and serves it until it is
// unmounted. It returns once the kernel has the mount. As root it mounts
// directly; otherwise through fusermount3, which must be installed.
//
// Mount clears the umask of the whole process (umask(0)), as libfuse's
// loopback examples do: the kernel has already applied the caller's
// umask to the mode a CREATE, MKDIR or MKNOD carries, and the daemon's own
// umask would narrow it a second time (a user with umask 002 would get
// 0644 files, and a systemd service, umask 022 by default, would take
// group write away from every file created through the mount). Files the
// process creates itself must therefore give their mode explicitly:
// lockmgr's lock directory, lock, gate and .info files do (with chmod),
// and so does mountcmd's log file.
func Mount(mountpoint string, opts Options) (*Server, error) {
	if opts.Manager == nil {
		return nil, errors.New("fusefs: Options.Manager is nil")
	}
	if opts.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		opts.Logger = l
	}
	src, err := filepath.Abs(opts.Source)
	if err != nil {
		return nil, err
	}
	if root := filepath.Clean(opts.Manager.Root()); root != src {
		return nil, fmt.Errorf("fusefs: the lock manager's root is %s, not the source %s", root, src)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(src, &st); err != nil {
		return nil, fmt.Errorf("fusefs: source %s: %w", src, err)
	}
	mnt, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	fsys := &fileSystem{
		mountpoint:   mnt,
		mgr:          opts.Manager,
		log:          opts.Logger,
		debug:        debugEnabled(opts.Logger),
		timeout:      ownTimeout(opts),
		readOnly:     opts.ReadOnly,
		attrTimeout:  opts.AttrTimeout,
		entryTimeout: opts.EntryTimeout,
		hidden:       hiddenName(src, opts.Manager.LockDir()),
		status:       newStatusView(src, mnt),
	}
	if fsys.back, err = newBacking(src); err != nil {
		return nil, fmt.Errorf("fusefs: source: %w", err)
	}
	root := &node{fsys: fsys}
	fsys.root = root.EmbeddedInode()
	fsys.notify = newNotifier(fsys)
	root.watch()

	direct := os.Geteuid() == 0
	unix.Umask(0)
	srv, err := serve(mountpoint, root, fuseOptions(opts, src, direct), &fsys.requests, fsys.notify)
	if err != nil {
		fsys.notify.close()
		return nil, err
	}
	return &Server{srv: srv, fsys: fsys, mountpoint: mountpoint, direct: direct}, nil
}

// serve is fs.Mount with every request counted in counts (requests.go),
// and tickets for the requests that change names if nt watches SOURCE
// (notify_own.go).
func serve(mountpoint string, root fs.InodeEmbedder, fopts *fs.Options, counts *reqCounts, nt *notifier) (*fuse.Server, error) {
	var inner fuse.RawFileSystem = fs.NewNodeFS(root, fopts)
	if nt != nil {
		inner = &ownChangeFS{RawFileSystem: inner, o: nt.own}
	}
	raw := &countingFS{RawFileSystem: inner, n: counts}
	srv, err := fuse.NewServer(raw, mountpoint, &fopts.MountOptions)
	if err != nil {
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		// Serve returns by itself once the mount is gone.
		return nil, err
	}
	return srv, nil
}

// fuseOptions are go-fuse's options for a mount of src with opts; direct
// when the daemon can call mount(2) itself (root).
func fuseOptions(opts Options, src string, direct bool) *fs.Options {
	fuseLog := log.New(&logWriter{log: opts.Logger.WithField("component", "go-fuse"), debug: opts.DebugFUSE}, "", 0)
	entry, attr, negative := opts.EntryTimeout, opts.AttrTimeout, opts.NegativeTimeout
	fopts := &fs.Options{
		// Show a mode of 0000 as it is: go-fuse otherwise reports 0644
		// (0755 for a directory), with which default_permissions (see
		// AllowOther) would let others open a file nobody may open.
		NullPermissions: true,
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &negative,
		Logger:          fuseLog,
		MountOptions: fuse.MountOptions{
			FsName:     src,
			Name:       "scanlockfs",
			AllowOther: opts.AllowOther,
			Debug:      opts.DebugFUSE,
			Logger:     fuseLog,
			// Root mounts with mount(2) and falls back to fusermount3.
			DirectMount: direct,
			// O_TRUNC arrives with OPEN, under the lock the open takes,
			// instead of as a separate SETATTR.
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC,
			// flock(2) reaches the daemon, for .locks/<scan>.lock
			// (locksdir_lock.go); fcntl locks stay the kernel's.
			EnableLocks: true, DisabledCapabilities: fuse.CAP_POSIX_LOCKS,
		},
	}
	if opts.AllowOther {
		fopts.MountOptions.Options = append(fopts.MountOptions.Options, "default_permissions")
	}
	if opts.ReadOnly {
		fopts.MountOptions.Options = append(fopts.MountOptions.Options, "ro")
	}
	if opts.NoPassthrough {
		fopts.MountOptions.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	}
	return fopts
}

// ownTimeout is the timeout fusefs must apply itself: none when the
// manager's default is the same (it applies it; a second context with a
// deadline would cost a timer per open for nothing).
func ownTimeout(opts Options) time.Duration {
	if opts.Timeout == opts.Manager.Timeout() {
		return 0
	}
	return opts.Timeout
}

// hiddenName returns the name of the lock directory if it sits directly
// in the source directory.
func hiddenName(src, lockDir string) string {
	if filepath.Dir(filepath.Clean(lockDir)) == filepath.Clean(src) {
		return filepath.Base(lockDir)
	}
	return ""
}

// Wait returns when the file system is unmounted and every request has
// been answered.
func (s *Server) Wait() {
	s.srv.Wait()
	s.fsys.notify.close()
}

// Unmount unmounts the file system; it fails with a "busy" error while
// files of it are open. go-fuse already retries a few times for a
// fraction of a second, because close(2) returns before the kernel has
// released the file.
func (s *Server) Unmount() error { return s.srv.Unmount() }

// UnmountLazy detaches the mount (umount -l): new paths no longer reach
// it, and open files keep being served until they are closed; then Wait
// returns.
func (s *Server) UnmountLazy() error {
	if s.direct {
		if err := unix.Unmount(s.mountpoint, unix.MNT_DETACH); err == nil {
			return nil
		}
	}
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return fmt.Errorf("lazy unmount of %s: %w", s.mountpoint, err)
		}
	}
	out, err := exec.Command(bin, "-u", "-z", s.mountpoint).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lazy unmount of %s: %v: %s", s.mountpoint, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Stats returns what the daemon has served so far.
func (s *Server) Stats() Stats {
	return Stats{
		Opens:  s.fsys.stats.opens.Load(),
		Reads:  s.fsys.stats.reads.Load(),
		Writes: s.fsys.stats.writes.Load(),
	}
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

// logWriter turns go-fuse's log lines into logrus entries. With
// DebugFUSE, go-fuse traces every request ("rx 12: OPEN ...", "tx 12:
// OK ...") and its mount steps: those go to debug level. Without it,
// go-fuse only logs what went wrong (a failed write to /dev/fuse, a
// panic in a handler): warning level.
type logWriter struct {
	log   logrus.FieldLogger
	debug bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		switch {
		case line == "":
		case w.debug && !strings.Contains(line, "panic") && !strings.Contains(strings.ToLower(line), "fail"):
			w.log.Debug(line)
		default:
			w.log.Warn(line)
		}
	}
	return len(p), nil
}
