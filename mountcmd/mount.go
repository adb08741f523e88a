package mountcmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"scanlockfs/fusefs"
	"scanlockfs/lockmgr"
)

// readyFormat is the one line mount prints on standard output once the
// mount is usable; scripts and tests wait for it.
const readyFormat = "scanlockfs: mounted %s on %s\n"

// unmountPatience is how long a signalled mount keeps retrying a busy
// unmount before it detaches lazily.
const unmountPatience = 3 * time.Second

func init() {
	register(&cli.Command{
		Name:      "mount",
		Usage:     "mount a scan database so that every program takes scan locks",
		ArgsUsage: "SOURCE MOUNTPOINT",
		UsageText: "scanlockfs mount [--timeout D] [--read-only] [--allow-other] [--log-level L] [--debug-fuse] SOURCE MOUNTPOINT",
		Description: "Shows the scan database SOURCE at MOUNTPOINT. A program that opens a file of scan S\n" +
			"(MOUNTPOINT/S/...) for reading holds S's shared lock, one that opens it for writing or creates\n" +
			"a file holds S's exclusive lock, until it closes the file; renames, deletes, chmod and the\n" +
			"like hold the exclusive lock while they run. The locks are plantdb's (SOURCE/.locks), so\n" +
			"the mount, plantdb and 'scanlockfs run' exclude each other. An open that waits longer than\n" +
			"--timeout fails with EBUSY; with O_NONBLOCK it fails at once with EAGAIN.\n\n" +
			"Runs in the foreground; prints '" + strings.TrimSpace(fmt.Sprintf(readyFormat, "SOURCE", "MOUNTPOINT")) +
			"' once ready.\n" +
			"Stops when unmounted (fusermount3 -u MOUNTPOINT) or on SIGINT/SIGTERM, releasing every lock.\n\n" +
			"Exit codes: 0 unmounted; 2 bad arguments; 5 mount failed or MOUNTPOINT unusable;\n" +
			"6 SOURCE or MOUNTPOINT missing; 1 internal error.\n\n" +
			"Examples:\n" +
			"  scanlockfs mount /data/db /mnt/db &\n" +
			"  cp /mnt/db/scan_001/images/*.jpg /tmp/   # shared lock on scan_001 while copying\n" +
			"  fusermount3 -u /mnt/db",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "timeout", Aliases: []string{"w"}, Value: lockmgr.DefaultTimeout.String(),
				Usage: "an open waits at most `D` for its scan lock, then fails with EBUSY; 0 waits until interrupted"},
			&cli.BoolFlag{Name: "read-only", Aliases: []string{"r"}, Usage: "mount read-only (writes fail with EROFS); reads still take shared locks"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users use the mount (needs user_allow_other in /etc/fuse.conf unless root); turns on the kernel's permission checks"},
			lockDirFlag,
			logLevelFlag,
			logFormatFlag,
			&cli.BoolFlag{Name: "debug-fuse", Usage: "log every FUSE request and reply (at debug level; implies --log-level debug)"},
			&cli.BoolFlag{Name: "no-passthrough", Hidden: true, Usage: "serve reads and writes through the daemon (for tests and measurements)"},
		},
		Action: mountAction,
	})
}

func mountAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErrorf("mount: need SOURCE and MOUNTPOINT, got %d argument(s): scanlockfs mount [options] SOURCE MOUNTPOINT", c.NArg())
	}
	timeout, err := parseTimeout(c.String("timeout"))
	if err != nil {
		return err
	}
	source, err := sourceDir(c.Args().Get(0))
	if err != nil {
		return err
	}
	mountpoint, err := mountpointDir(source, c.Args().Get(1))
	if err != nil {
		return err
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	if c.Bool("debug-fuse") && !log.IsLevelEnabled(logrus.DebugLevel) {
		log.SetLevel(logrus.DebugLevel)
	}

	mopts := []lockmgr.Option{lockmgr.WithTimeout(timeout), lockmgr.WithLogger(log.WithField("component", "lockmgr"))}
	if d := c.String(lockDirFlag.Name); d != "" {
		mopts = append(mopts, lockmgr.WithLockDir(d))
	}
	mgr, err := lockmgr.New(source, mopts...)
	if err != nil {
		return exitf(ExitMount, "mount: %v", err)
	}
	defer mgr.Close()

	srv, err := fusefs.Mount(mountpoint, fusefs.Options{
		Source:        source,
		Manager:       mgr,
		Timeout:       timeout,
		ReadOnly:      c.Bool("read-only"),
		AllowOther:    c.Bool("allow-other"),
		DebugFUSE:     c.Bool("debug-fuse"),
		NoPassthrough: c.Bool("no-passthrough"),
		Logger:        log,
	})
	if err != nil {
		return exitf(ExitMount, "mount: cannot mount %s on %s: %v%s", source, mountpoint, err, mountHint(err))
	}

	// Catch the signals before announcing the mount, so that a script that
	// signals us right after the line cannot kill us uncleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()

	fmt.Fprintf(c.App.Writer, readyFormat, source, mountpoint)
	log.WithFields(logrus.Fields{"source": source, "mountpoint": mountpoint, "timeout": timeout,
		"read_only": c.Bool("read-only")}).Info("mounted")

	forced := false
	select {
	case <-done:
		log.Info("unmounted from outside")
	case sig := <-sigs:
		log.WithField("signal", sig).Info("unmounting")
		forced = shutdown(srv, mountpoint, log, done, sigs)
	}
	st := srv.Stats()
	ms := mgr.Stats()
	if err := mgr.Close(); err != nil {
		log.WithError(err).Warn("closing the lock manager")
	}
	log.WithFields(logrus.Fields{
		"opens": st.Opens, "daemon_reads": st.Reads, "daemon_writes": st.Writes,
		"grants_shared": ms.GrantsShared, "grants_exclusive": ms.GrantsExclusive,
		"timeouts": ms.Timeouts, "would_block": ms.WouldBlock, "deadlocks": ms.Deadlocks,
		"cancelled": ms.Cancelled, "holders_left": ms.Holders, "waiters_left": ms.Waiters,
	}).Info("stopped; every scan lock released")
	if forced {
		return exitf(ExitMount, "mount: stopped while files of %s were still open; their programs now get errors (ENOTCONN)", mountpoint)
	}
	return nil
}

// shutdown unmounts after a signal. A mount with open files cannot be
// unmounted: it retries for a while, because close(2) returns before the
// kernel releases the file, then detaches the mount lazily and keeps
// serving the open files until they are closed. A second signal stops at
// once; it returns true then.
func shutdown(srv *fusefs.Server, mountpoint string, log logrus.FieldLogger, done <-chan struct{}, sigs <-chan os.Signal) bool {
	deadline := time.Now().Add(unmountPatience)
	for {
		err := srv.Unmount()
		if err == nil {
			<-done
			return false
		}
		select {
		case <-done:
			return false
		case <-sigs:
			return true
		default:
		}
		if time.Now().After(deadline) {
			log.WithError(err).Warn("mount busy")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := srv.UnmountLazy(); err != nil {
		log.WithError(err).Error("lazy unmount failed; stop the programs using " + mountpoint + ", or send another signal to stop anyway")
	} else {
		log.Warn("files are still open under " + mountpoint + ": detached the mount; their locks are held until they are closed " +
			"(send another signal to stop at once)")
	}
	select {
	case <-done:
		return false
	case <-sigs:
		return true
	}
}

// mountpointDir checks MOUNTPOINT: an existing empty directory, neither
// SOURCE nor inside it (the mount would show itself inside itself).
func mountpointDir(source, arg string) (string, error) {
	if arg == "" {
		return "", usageErrorf("MOUNTPOINT is empty: give an empty directory to mount on")
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", exitf(ExitInternal, "MOUNTPOINT %s: %v", arg, err)
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", exitf(ExitNotFound, "MOUNTPOINT %s does not exist: create it first (mkdir -p %s)", abs, abs)
	case errors.Is(err, syscall.ENOTCONN):
		return "", exitf(ExitMount, "MOUNTPOINT %s is a dead FUSE mount: unmount it first (fusermount3 -u %s)", abs, abs)
	case err != nil:
		return "", exitf(ExitMount, "MOUNTPOINT %s: %v", abs, err)
	case !st.IsDir():
		return "", exitf(ExitMount, "MOUNTPOINT %s is not a directory: give an empty directory", abs)
	}
	realSrc, err1 := filepath.EvalSymlinks(source)
	realMnt, err2 := filepath.EvalSymlinks(abs)
	if err1 != nil || err2 != nil {
		realSrc, realMnt = source, abs
	}
	if realMnt == realSrc || strings.HasPrefix(realMnt, realSrc+string(filepath.Separator)) {
		return "", usageErrorf("MOUNTPOINT %s is inside SOURCE %s: the mount would contain itself; give a directory outside SOURCE", abs, source)
	}
	f, err := os.Open(abs)
	if err != nil {
		return "", exitf(ExitMount, "MOUNTPOINT %s: %v", abs, err)
	}
	names, _ := f.Readdirnames(1)
	f.Close()
	if len(names) > 0 {
		return "", exitf(ExitMount, "MOUNTPOINT %s is not empty (it holds %q): give an empty directory; if scanlockfs is already mounted there, unmount it first (fusermount3 -u %s)", abs, names[0], abs)
	}
	return abs, nil
}

// mountHint says what to do about a failed mount.
func mountHint(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "/dev/fuse") || errors.Is(err, fs.ErrNotExist) && strings.Contains(msg, "fuse"):
		return " (is the fuse kernel module loaded? try: modprobe fuse)"
	case strings.Contains(msg, "executable file not found"):
		return " (install fusermount3: apt-get install fuse3)"
	case strings.Contains(msg, "fusermount exited"):
		return " (fusermount3 says why above: /dev/fuse must be readable and writable by you, and --allow-other needs user_allow_other in /etc/fuse.conf)"
	case strings.Contains(msg, "allow_other"):
		return " (--allow-other needs user_allow_other in /etc/fuse.conf)"
	case errors.Is(err, fs.ErrPermission):
		return " (run as root, or install fusermount3: apt-get install fuse3)"
	}
	return ""
}
