package mountcmd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"scanlockfs/lockmgr"
)

// forwardedSignals reach COMMAND through run. run must not die of them
// itself: the lock is held by run, not by COMMAND (which does not inherit
// the lock file descriptor), so run dying would unlock the scan under a
// running COMMAND.
var forwardedSignals = []os.Signal{
	unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2,
}

// runCommand is `scanlockfs run`.
func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a command while holding a scan lock (like flock(1))",
		ArgsUsage: "SOURCE SCAN -- COMMAND [ARGS...]",
		UsageText: "scanlockfs run --shared|--exclusive [--timeout D] [--nonblock] [--user NAME] [--lock-dir DIR] SOURCE SCAN -- COMMAND [ARGS...]",
		Description: "Takes the lock of scan SCAN of the scan database SOURCE (the file SOURCE/.locks/SCAN.lock,\n" +
			"locked with flock(2) exactly as plantdb and the scanlockfs mount do), runs COMMAND with the\n" +
			"same standard input, output and error, releases the lock when COMMAND exits, and exits with\n" +
			"COMMAND's status (128+N if it was killed by signal N). SIGINT, SIGTERM, SIGHUP, SIGQUIT,\n" +
			"SIGUSR1 and SIGUSR2 sent to scanlockfs are passed to COMMAND; at a terminal, Ctrl-C also\n" +
			"reaches COMMAND directly. The lock is held by scanlockfs itself, not inherited by COMMAND:\n" +
			"programs COMMAND leaves running in the background are not covered once it exits. Through\n" +
			"a scanlockfs mount of SOURCE, COMMAND and every process it starts act as the holder of the\n" +
			"lock: they use the scan without waiting for scanlockfs run itself.\n" +
			"Options go before SOURCE; '--' before COMMAND is optional unless COMMAND starts with '-'.\n\n" +
			"Exit codes: COMMAND's status once it ran; 2 bad arguments; 3 lock timeout; 4 busy with\n" +
			"--nonblock; 6 SOURCE missing; 7 --etcd and the cluster did not answer; 126 COMMAND not\n" +
			"executable; 127 COMMAND not found;\n" +
			"128+N interrupted by signal N while waiting for the lock; 1 internal error.\n\n" +
			"Examples:\n" +
			"  # back up a scan while nobody writes to it (waits up to 30 s)\n" +
			"  scanlockfs run --shared /data/db scan_001 -- tar czf scan_001.tgz -C /data/db scan_001\n\n" +
			"  # rewrite a scan's metadata; wait as long as it takes\n" +
			"  scanlockfs run --exclusive --timeout 0 /data/db scan_001 -- python3 fix_metadata.py scan_001\n\n" +
			"  # skip the scan if anybody uses it right now (exit code 4); safe under set -e\n" +
			"  scanlockfs run -x -n /data/db scan_001 -- ./process.sh || case $? in\n" +
			"  	4) echo \"scan_001 busy, skipped\" ;;\n" +
			"  	*) exit $? ;;\n" +
			"  esac",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "shared", Aliases: []string{"s"}, Usage: "take the lock shared (for reading; many holders at once)"},
			&cli.BoolFlag{Name: "exclusive", Aliases: []string{"x", "e"}, Usage: "take the lock exclusive (for writing; one holder, no readers)"},
			&cli.StringFlag{Name: "timeout", Aliases: []string{"w"}, Value: lockmgr.DefaultTimeout.String(),
				Usage: "give up after `D` (a duration such as 500ms, 30s or 5m, or seconds like flock -w); 0 waits forever"},
			&cli.BoolFlag{Name: "nonblock", Aliases: []string{"n"}, Usage: "fail at once (exit code 4) if the lock is held"},
			&cli.StringFlag{Name: "user", Usage: "user `NAME` recorded in the lock's .info file (default: the current user)"},
			lockDirFlag(),
			&cli.StringFlag{Name: flagLogLevel, Value: "warn", Usage: "log level: error, warn, info (shows waits), debug or trace"},
			logFormatFlag(),
		}, etcdFlags()...),
		BashComplete: completeScanArgs,
		Action:       runAction,
	}
}

// runArgs is the validated command line of run.
type runArgs struct {
	source, scan string
	mode         lockmgr.Mode
	timeout      time.Duration
	nonblock     bool
	user         string
	lockDir      string
	argv         []string // COMMAND [ARGS...]
}

func parseRunArgs(c *cli.Context) (*runArgs, error) {
	args := c.Args().Slice()
	// urfave/cli stops parsing options at SOURCE; options placed later
	// end up here.
	hint := ""
	for _, a := range args {
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			hint = fmt.Sprintf(" (%q comes after SOURCE: options go before SOURCE)", a)
			break
		}
	}
	r := &runArgs{nonblock: c.Bool("nonblock"), user: c.String("user"), lockDir: c.String(flagLockDir)}
	switch sh, ex := c.Bool("shared"), c.Bool("exclusive"); {
	case sh && ex:
		return nil, usageErrorf("run: give either --shared or --exclusive, not both")
	case sh:
		r.mode = lockmgr.Shared
	case ex:
		r.mode = lockmgr.Exclusive
	default:
		return nil, usageErrorf("run: give --shared (to read) or --exclusive (to write)%s", hint)
	}
	switch len(args) {
	case 0:
		return nil, usageErrorf("run: missing SOURCE, SCAN and COMMAND: scanlockfs run --shared|--exclusive SOURCE SCAN -- COMMAND [ARGS...]")
	case 1:
		return nil, usageErrorf("run: missing SCAN and COMMAND after SOURCE %s", args[0])
	}
	r.source, r.scan = args[0], args[1]
	if strings.HasPrefix(r.scan, "-") {
		return nil, usageErrorf("run: SCAN %q looks like a flag: options go before SOURCE: scanlockfs run --shared|--exclusive [options] SOURCE SCAN -- COMMAND [ARGS...]", r.scan)
	}
	r.argv = args[2:]
	if len(r.argv) > 0 && r.argv[0] == "--" {
		r.argv = r.argv[1:]
	}
	if err := lockmgr.ValidateScanID(r.scan); err != nil {
		return nil, usageErrorf("run: SCAN: %v: give the name of a scan folder in SOURCE%s", err, hint)
	}
	if len(r.argv) == 0 {
		return nil, usageErrorf("run: no COMMAND to run: scanlockfs run ... SOURCE SCAN -- COMMAND [ARGS...]")
	}
	if r.argv[0] == "" {
		return nil, usageErrorf("run: COMMAND is empty")
	}
	d, err := parseTimeout(c.String("timeout"))
	if err != nil {
		return nil, err
	}
	r.timeout = d
	if r.nonblock && c.IsSet("timeout") {
		return nil, usageErrorf("run: --nonblock and --timeout contradict each other: give one of them")
	}
	if r.user == "" {
		r.user = lockmgr.UserName()
	}
	return r, nil
}

// parseTimeout accepts a Go duration ("500ms", "2m") or plain seconds like
// flock -w ("30", "0.5").
func parseTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f > float64(1<<62)/1e9 {
			return 0, usageErrorf("--timeout %q: want a duration such as 500ms, 30s or 5m, or a number of seconds", s)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return 0, usageErrorf("--timeout %q: negative; give 0 to wait forever", s)
	}
	return d, nil
}

func runAction(c *cli.Context) error {
	r, err := parseRunArgs(c)
	if err != nil {
		return err
	}
	source, err := sourceDir(r.source)
	if err != nil {
		return err
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(source, r.scan)); errors.Is(err, fs.ErrNotExist) {
		// plantdb locks a scan before it creates its folder, so this is
		// allowed; but a misspelt scan id would lock nothing anybody uses.
		fmt.Fprintf(c.App.ErrWriter, "scanlockfs: warning: %s has no scan folder %s (misspelt?); locking it anyway\n",
			printable(source), printable(r.scan))
	}
	// Look COMMAND up before locking: no point in waiting for a lock to
	// then fail to start it.
	path, err := lookCommand(r.argv[0])
	if err != nil {
		return err
	}

	m, closeM, err := runManager(c, r, source, log)
	if err != nil {
		return err
	}
	defer closeM()

	owner := lockmgr.ProcessOwner()
	owner.User = r.user
	owner.Note = "run: " + commandLine(r.argv)

	// Catch the signals from now on: while waiting they cancel the wait,
	// once COMMAND runs they are passed on to it.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)

	lease, sig, err := acquireForRun(m, r, owner, sigs, log)
	if sig != nil {
		if lease != nil {
			_ = lease.Release()
		}
		return exitf(ExitSignalBase+int(sig.(syscall.Signal)), "run: interrupted by %s while waiting for the %s lock on scan %s; %s was not started",
			unix.SignalName(sig.(syscall.Signal)), r.mode, r.scan, r.argv[0])
	}
	if err != nil {
		return runLockError(m, r, err)
	}
	log.WithFields(logrus.Fields{"scan": r.scan, "mode": r.mode, "waited": lease.Waited()}).Info("scan lock granted")

	code, err := runChild(path, r.argv, sigs)
	if rerr := lease.Release(); rerr != nil {
		log.WithError(rerr).Warn("releasing the scan lock failed")
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return exitf(code, "") // COMMAND has said what went wrong
	}
	return nil
}

// runManager opens the lock manager that run takes its lock with; closeAll
// closes it and the etcd client, if any.
func runManager(c *cli.Context, r *runArgs, source string, log logrus.FieldLogger) (m *lockmgr.Manager, closeAll func(), err error) {
	opts := []lockmgr.Option{
		lockmgr.WithStaleCleanup(false), // the mount and `cleanup` purge; run only locks
		// COMMAND runs for a while: have the .info file (user, since, the
		// command line) in place before it starts, for status and plantdb.
		lockmgr.WithInfoDelay(0),
		lockmgr.WithTimeout(r.timeout),
		lockmgr.WithLogger(log),
	}
	if r.lockDir != "" {
		opts = append(opts, lockmgr.WithLockDir(r.lockDir))
	}
	eopts, closeEtcd, err := etcdOptions(c)
	if err != nil {
		closeEtcd()
		return nil, nil, err
	}
	if m, err = lockmgr.New(source, append(opts, eopts...)...); err != nil {
		closeEtcd()
		return nil, nil, exitf(clusterExit(err, ExitInternal), "run: %w", err)
	}
	return m, func() { m.Close(); closeEtcd() }, nil
}

// acquireForRun takes the lock. A signal that arrives while it waits
// cancels the wait and is returned; the lease may still be non-nil if the
// grant raced with the signal.
func acquireForRun(m *lockmgr.Manager, r *runArgs, owner lockmgr.Owner, sigs <-chan os.Signal, log logrus.FieldLogger) (*lockmgr.Lease, os.Signal, error) {
	lease, err := m.TryAcquire(r.scan, r.mode, owner)
	if r.nonblock || !errors.Is(err, lockmgr.ErrWouldBlock) {
		select {
		case s := <-sigs:
			return lease, s, err
		default:
			return lease, nil, err
		}
	}
	if st, serr := m.Status(r.scan); serr == nil {
		log.WithFields(logrus.Fields{"scan": r.scan, "mode": r.mode, "timeout": r.timeout}).
			Infof("waiting for the %s lock on scan %s: %s", r.mode, r.scan, holderSummary(st))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg     sync.WaitGroup
		caught os.Signal
	)
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case caught = <-sigs:
			cancel()
		case <-done:
		}
	}()
	lease, err = m.Acquire(ctx, r.scan, r.mode, owner)
	close(done)
	wg.Wait()
	return lease, caught, err
}

// runLockError explains why the lock was not granted, naming the holders.
func runLockError(m *lockmgr.Manager, r *runArgs, err error) error {
	who := "it is held"
	if st, serr := m.Status(r.scan); serr == nil {
		who = holderSummary(st)
	}
	where := fmt.Sprintf("scan %s in %s", r.scan, m.Root())
	switch {
	case errors.Is(err, lockmgr.ErrTimeout):
		return exitf(ExitTimeout, "run: timed out after %v waiting for the %s lock on %s: %s; try again later, raise --timeout (0 waits forever), or see 'scanlockfs status %s %s'",
			r.timeout, r.mode, where, who, m.Root(), r.scan)
	case errors.Is(err, lockmgr.ErrWouldBlock):
		return exitf(ExitBusy, "run: %s is busy: %s; not waiting because of --nonblock", where, who)
	}
	return exitf(ExitInternal, "run: cannot lock %s: %w", where, err)
}

// lookCommand finds COMMAND like a shell does, with the shell's exit codes
// when it cannot be run.
func lookCommand(name string) (string, error) {
	path, err := exec.LookPath(name)
	if errors.Is(err, exec.ErrDot) {
		err = nil // PATH contains "."; a shell would run it too
	}
	if err == nil {
		return path, nil
	}
	switch {
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		if strings.Contains(name, "/") {
			return "", exitf(ExitCommandNotFound, "run: %s: no such file (give the path of an existing program)", name)
		}
		return "", exitf(ExitCommandNotFound, "run: %s: command not found in PATH (install it or give its full path)", name)
	case errors.Is(err, fs.ErrPermission):
		return "", exitf(ExitCannotExec, "run: %s: permission denied (not executable: chmod +x it, or run it through its interpreter)", name)
	case errors.Is(err, syscall.EISDIR):
		return "", exitf(ExitCannotExec, "run: %s: is a directory, not a program", name)
	}
	return "", exitf(ExitCannotExec, "run: %s: cannot be executed: %w", name, err)
}

// runChild runs COMMAND, passing the caught signals on, and returns its
// exit status the way a shell reports it.
func runChild(path string, argv []string, sigs <-chan os.Signal) (int, error) {
	cmd := &exec.Cmd{
		Path:   path,
		Args:   argv,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
	}
	if err := cmd.Start(); err != nil {
		switch {
		case errors.Is(err, syscall.ENOEXEC):
			return 0, exitf(ExitCannotExec, "run: %s: not a program this system can run (exec format error; a script without a #! line?)", argv[0])
		case errors.Is(err, fs.ErrNotExist):
			// The file exists (lookCommand found it): its interpreter does not.
			return 0, exitf(ExitCannotExec, "run: %s: cannot be executed: %w (is the interpreter in its #! line installed?)", argv[0], err)
		case errors.Is(err, fs.ErrPermission):
			return 0, exitf(ExitCannotExec, "run: %s: permission denied", argv[0])
		}
		return 0, exitf(ExitCannotExec, "run: %s: cannot be executed: %w", argv[0], err)
	}
	done := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		for {
			select {
			case s := <-sigs:
				// os.Process uses a pidfd: no risk of signalling a reused pid.
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	_ = cmd.Wait() // the status is all we need; a non-zero one is not our error
	close(done)
	<-forwarded
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return cmd.ProcessState.ExitCode(), nil
	}
	if ws.Signaled() {
		return ExitSignalBase + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// commandLine renders argv for the .info note and messages, shortened.
func commandLine(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`") {
			a = strconv.Quote(a)
		}
		b.WriteString(a)
		if b.Len() > 200 {
			return b.String()[:200] + "..."
		}
	}
	return b.String()
}
