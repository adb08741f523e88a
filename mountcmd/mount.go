package mountcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"scanlockfs/fusefs"
	"scanlockfs/lockmgr"
)

// mountCommand is `scanlockfs mount`; the mount(8) helper form arrives here too.
func mountCommand(argv []string) *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount a scan database so that every program takes scan locks",
		ArgsUsage: "SOURCE MOUNTPOINT",
		UsageText: "scanlockfs mount [--timeout D] [--read-only] [--allow-other] [--recover] [--daemon] [--log-level L] [-o OPTIONS] SOURCE MOUNTPOINT [-o OPTIONS]\n" +
			"   scanlockfs SOURCE MOUNTPOINT -o OPTIONS    (as mount(8) runs it for fstab type fuse.scanlockfs)",
		Description: "Shows the scan database SOURCE at MOUNTPOINT. A program that opens a file of scan S\n" +
			"(MOUNTPOINT/S/...) for reading holds S's shared lock, one that opens it for writing or creates\n" +
			"a file holds S's exclusive lock, until it closes the file; renames, deletes, chmod and the\n" +
			"like hold the exclusive lock while they run. The locks are plantdb's (SOURCE/.locks), so\n" +
			"the mount, plantdb and 'scanlockfs run' exclude each other. An open that waits longer than\n" +
			"--timeout fails with EBUSY; with O_NONBLOCK it fails at once with EAGAIN.\n\n" +
			"Runs in the foreground (with --daemon, in the background once mounted). Once the mount\n" +
			"serves, it prints '" + strings.TrimSpace(fmt.Sprintf(readyFormat, "SOURCE", "MOUNTPOINT")) + "'\n" +
			"and, when NOTIFY_SOCKET is set (systemd Type=notify), sends READY=1. It stops when unmounted\n" +
			"('scanlockfs unmount MOUNTPOINT', fusermount3 -u, or umount as root) or on SIGINT/SIGTERM,\n" +
			"releasing every lock. On a signal while programs have files open in the mount, it goes on\n" +
			"serving and retries the unmount for 3 s, then detaches the mount (new paths no longer reach\n" +
			"it) and serves the open files, with their locks, until they are closed; a second signal\n" +
			"stops it at once (exit 5; those programs get ENOTCONN). A dead mount on MOUNTPOINT, left by a server that was killed\n" +
			"('transport endpoint is not connected'), is refused; --recover unmounts it and mounts again.\n\n" +
			mountOptionsHelp + "\n\n" +
			"Exit codes: 0 unmounted; 2 bad arguments or options, or SOURCE is a scanlockfs mount; 5 mount\n" +
			"failed, MOUNTPOINT unusable or a dead mount on it (without --recover), or stopped by a second\n" +
			"signal with files open; 6 SOURCE or MOUNTPOINT missing; 1 internal error.\n\n" +
			"Examples:\n" +
			"  scanlockfs mount /data/db /mnt/db &\n" +
			"  cp /mnt/db/scan_001/images/*.jpg /tmp/   # shared lock on scan_001 while copying\n" +
			"  scanlockfs unmount /mnt/db\n\n" +
			"  # in a script: returns once the mount is ready; the server stays in the background\n" +
			"  scanlockfs mount --daemon --log-file /var/log/scanlockfs.log -o timeout=5m /data/db /mnt/db\n\n" +
			"  # after a crash (kill -9, OOM): clear the dead mount and mount again\n" +
			"  scanlockfs mount --recover /data/db /mnt/db\n\n" +
			"  # /etc/fstab (needs /usr/local/bin/scanlockfs; mount(8) runs it through mount.fuse3):\n" +
			"  /data/db  /mnt/db  fuse.scanlockfs  timeout=30s,allow_other,nofail  0  0\n" +
			"  mount /mnt/db        # or: mount -t fuse.scanlockfs -o timeout=30s /data/db /mnt/db\n\n" +
			"  # systemd (scripts/scanlockfs@.service; instance = systemd-escape --path /mnt/db):\n" +
			"  systemctl enable --now scanlockfs@mnt-db.service",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "timeout", Aliases: []string{"w"}, Value: lockmgr.DefaultTimeout.String(),
				Usage: "an open waits at most `D` for its scan lock, then fails with EBUSY; 0 waits until interrupted"},
			&cli.BoolFlag{Name: "read-only", Aliases: []string{"r"}, Usage: "mount read-only (writes fail with EROFS); reads still take shared locks"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users use the mount (needs user_allow_other in /etc/fuse.conf unless root); turns on the kernel's permission checks"},
			&cli.BoolFlag{Name: "info-files", Value: true, Usage: "write SOURCE/.locks/SCAN.info (holder, time, pid) for plantdb and 'scanlockfs status'; --info-files=false skips them"},
			&cli.BoolFlag{Name: "recover", Usage: "if MOUNTPOINT holds a dead FUSE mount (its server was killed), unmount it and mount again"},
			&cli.GenericFlag{Name: "options", Aliases: []string{"o"}, Value: &optionList{}, Usage: "mount(8)-style `OPTIONS`, comma-separated, repeatable (see above)"},
			&cli.BoolFlag{Name: "daemon", Usage: "run in the background once mounted; this command then exits 0 (logs: --log-file, or the system log)"},
			&cli.BoolFlag{Name: mountHelperFlag, Hidden: true, Usage: "started by mount(8) through mount.fuse3: --daemon, quietly"},
			lockDirFlag(),
			logLevelFlag("info"),
			logFormatFlag(),
			&cli.StringFlag{Name: "log-file", TakesFile: true, Usage: "append the log to `FILE` instead of standard error"},
			&cli.BoolFlag{Name: "debug-fuse", Usage: "log every FUSE request and reply (at debug level; implies --log-level debug)"},
			cacheTimeoutFlag("entry-timeout", fusefs.DefaultEntryTimeout, "the kernel keeps a name for `D` without asking again; a name created, removed or renamed on SOURCE by another process is passed on as inotify reports it, else (network file systems) seen within D or 100ms, whichever is lower"),
			cacheTimeoutFlag("attr-timeout", fusefs.DefaultAttrTimeout, "the kernel keeps attributes for `D`: an unlocked stat of a file whose data changed on SOURCE by another process lags by D at most (an open under the scan lock never does)"),
			cacheTimeoutFlag("negative-timeout", fusefs.DefaultNegativeTimeout, "the kernel remembers for `D` that a name does not exist (0: a file created on SOURCE is found at once)"),
			&cli.StringFlag{Name: "cpu-profile", Hidden: true, TakesFile: true, Usage: "write the daemon's CPU profile (pprof) to `FILE` when it unmounts; for scripts/bench/README.md"},
			&cli.BoolFlag{Name: "no-passthrough", Usage: "serve reads and writes through the daemon instead of the kernel's FUSE passthrough (root, Linux >= 6.9): slower, but open files fail with ENOTCONN instead of going on unlocked if the daemon dies"},
		}, etcdFlags()...),
		Action: func(c *cli.Context) error { return mountAction(c, argv) },
	}
}

// mountAction is the mount command: flags and -o options to a Config,
// then the lifecycle (or, for --daemon, this command line again in the
// background).
func mountAction(c *cli.Context, argv []string) error {
	args := c.Args().Slice()
	var trailing []string
	if len(args) == 4 && (args[2] == "-o" || args[2] == "--options") {
		// `scanlockfs mount SOURCE MOUNTPOINT -o OPTIONS`, as sshfs and
		// mount(8) take them.
		trailing, args = args[3:], args[:2]
	}
	if err := applyMountOptions(c, trailing); err != nil {
		return err
	}
	if len(args) != 2 {
		return usageErrorf("mount: need SOURCE and MOUNTPOINT, got %d argument(s): scanlockfs mount [options] SOURCE MOUNTPOINT (options go before SOURCE, or -o OPTIONS after MOUNTPOINT)", len(args))
	}
	child := isDaemonChild()
	if child {
		os.Unsetenv(daemonChildEnv)
	} else if c.Bool("daemon") || c.Bool(mountHelperFlag) {
		return startDaemon(c, argv, c.Bool(mountHelperFlag))
	}
	cfg, err := mountConfig(c, args[0], args[1])
	if err != nil {
		return err
	}
	if cfg.LogFile != nil {
		defer cfg.LogFile.Close()
	}
	cfg.Detach = child
	if p := c.String("cpu-profile"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return usageErrorf("--cpu-profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return usageErrorf("--cpu-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	return runMount(c.App.Writer, cfg)
}

// mountConfig maps the flags of mount to a Config, with its logger.
func mountConfig(c *cli.Context, source, mountpoint string) (Config, error) {
	timeout, err := parseTimeout(c.String("timeout"))
	if err != nil {
		return Config{}, err
	}
	log, err := newLogger(c)
	if err != nil {
		return Config{}, err
	}
	etcd, err := etcdSettings(c)
	if err != nil {
		return Config{}, err
	}
	var cache [3]time.Duration
	for i, f := range []string{"entry-timeout", "attr-timeout", "negative-timeout"} {
		if cache[i], err = parseCacheTimeout(f, c.String(f)); err != nil {
			return Config{}, err
		}
	}
	cfg := Config{Etcd: etcd,
		EntryTimeout: cache[0], AttrTimeout: cache[1], NegativeTimeout: cache[2],
		Source: source, Mountpoint: mountpoint, LockDir: c.String(flagLockDir), Timeout: timeout,
		ReadOnly: c.Bool("read-only"), AllowOther: c.Bool("allow-other"), InfoFiles: c.Bool("info-files"),
		Recover: c.Bool("recover"), DebugFUSE: c.Bool("debug-fuse"), NoPassthrough: c.Bool("no-passthrough"),
		Log: log,
	}
	if p := c.String("log-file"); p != "" {
		if cfg.LogFile, err = openLogFile(p); err != nil {
			return Config{}, err
		}
		log.SetOutput(cfg.LogFile)
	}
	if cfg.DebugFUSE && !log.IsLevelEnabled(logrus.DebugLevel) {
		log.SetLevel(logrus.DebugLevel)
	}
	return cfg, nil
}

// runMount mounts, announces the mount and serves it until it is
// unmounted or signalled.
func runMount(stdout io.Writer, cfg Config) error {
	m, err := StartMount(context.Background(), cfg)
	if err != nil {
		return err
	}
	// Catch the signals before announcing the mount, so that a script that
	// signals us right after the line cannot kill us uncleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM)
	defer signal.Stop(sigs)
	if err := m.Announce(stdout); err != nil {
		return err
	}
	return m.Serve(sigs)
}

// mountpointDir checks MOUNTPOINT: an existing empty directory, neither
// SOURCE nor inside it (the mount would show itself inside itself).
func mountpointDir(source, arg string) (string, error) {
	if arg == "" {
		return "", usageErrorf("MOUNTPOINT is empty: give an empty directory to mount on")
	}
	if strings.HasPrefix(arg, "/dev/fd/") {
		// mount.fuse3 mounts itself and passes its /dev/fuse descriptor.
		return "", usageErrorf("MOUNTPOINT %s is a descriptor that mount.fuse3 passes for its drop_privileges option, which scanlockfs does not support: remove drop_privileges from the mount options, and clear the dead mount mount.fuse3 made with 'scanlockfs unmount MOUNTPOINT'", arg)
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", exitf(ExitInternal, "MOUNTPOINT %s: %w", arg, err)
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", exitf(ExitNotFound, "MOUNTPOINT %s does not exist: create it first (mkdir -p %s)", abs, abs)
	case errors.Is(err, syscall.ENOTCONN):
		return "", deadMountError(abs)
	case err != nil:
		return "", exitf(ExitMount, "MOUNTPOINT %s: %w", abs, err)
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
	if fstype := liveFUSEMount(realMnt); fstype != "" {
		return "", exitf(ExitMount, "MOUNTPOINT %s already has a %s mount: unmount it first ('scanlockfs unmount %s'), or give another directory", abs, fstype, abs)
	}
	f, err := os.Open(abs)
	if err != nil {
		return "", exitf(ExitMount, "MOUNTPOINT %s: %w", abs, err)
	}
	names, _ := f.Readdirnames(1)
	f.Close()
	if len(names) > 0 {
		return "", exitf(ExitMount, "MOUNTPOINT %s is not empty (it holds %q): give an empty directory", abs, names[0])
	}
	return abs, nil
}

// mountHint says what to do about a failed mount, from the error's type
// and the system, never from the message. go-fuse mounts with mount(2)
// as root and falls back to fusermount3, which prints its reason on our
// standard error and exits non-zero: go-fuse reports that as an error of
// no particular type.
func mountHint(err error) string {
	var errno syscall.Errno
	switch {
	case noFUSEDevice():
		return " (is the fuse kernel module loaded? try: modprobe fuse)"
	case errors.Is(err, exec.ErrNotFound):
		return " (install fusermount3: apt-get install fuse3)"
	case errors.Is(err, fs.ErrPermission):
		return " (run as root, or install fusermount3: apt-get install fuse3)"
	case !errors.As(err, &errno):
		return " (fusermount3 says why above: /dev/fuse must be readable and writable by you, and --allow-other needs user_allow_other in /etc/fuse.conf)"
	}
	return ""
}

// noFUSEDevice reports whether /dev/fuse is missing.
func noFUSEDevice() bool {
	_, err := os.Stat("/dev/fuse")
	return errors.Is(err, fs.ErrNotExist)
}
