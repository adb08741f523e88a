package mountcmd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	lsyslog "github.com/sirupsen/logrus/hooks/syslog"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
)

// --daemon, and the mount(8) helper form (mount.fuse3 runs `scanlockfs
// SOURCE MOUNTPOINT -o OPTIONS` and waits for it to return): the command
// starts itself again as a background server in a new session and
// returns once that server's readiness line arrives, with exit code 0; if
// the server fails first, its messages and exit code are the command's.
//
// The server's standard output and error are pipes to the foreground
// process until it is ready. Then it moves them away (to --log-file, or
// /dev/null with the log going to the system log), prints the readiness
// line and leaves the working directory, so that the foreground process
// can exit without the server ever writing to a closed pipe (SIGPIPE)
// and without keeping a directory busy.

// daemonChildEnv marks the background server started by --daemon.
const daemonChildEnv = "SCANLOCKFS_DAEMON_CHILD"

// mountHelperFlag is the hidden flag of the mount(8) helper form: like
// --daemon, but quiet, as mount(8) is.
const mountHelperFlag = "mount-helper"

// daemonStderrDrain bounds the wait for the server to close its standard
// output and error after it reported ready (it has done so by then).
const daemonStderrDrain = 2 * time.Second

func isDaemonChild() bool { return os.Getenv(daemonChildEnv) == "1" }

// startDaemon runs the command line argv (nil: os.Args) again as a
// background server and waits until it is ready or has failed.
func startDaemon(c *cli.Context, argv []string, quiet bool) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	d, err := spawnDaemon(argv)
	if err != nil {
		return err
	}
	errDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(c.App.ErrWriter, d.stderr)
		d.stderr.Close()
		close(errDone)
	}()
	if ready := d.readyLine(c.App.Writer, errDone); ready != "" {
		if !quiet {
			fmt.Fprintln(c.App.Writer, ready)
		}
		notifyReady(log, d.cmd.Process.Pid)
		_ = d.cmd.Process.Release()
		return nil
	}
	<-errDone
	return daemonFailure(d.cmd.Wait())
}

// daemonProc is the background server while it starts: its standard
// output and error are pipes to this process.
type daemonProc struct {
	cmd            *exec.Cmd
	stdout, stderr *os.File
}

// spawnDaemon starts argv again as the background server, in a session
// of its own.
func spawnDaemon(argv []string) (*daemonProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, exitf(ExitInternal, "mount --daemon: cannot find this program to start it in the background: %w", err)
	}
	if len(argv) == 0 {
		argv = os.Args
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, exitf(ExitInternal, "mount --daemon: %w", err)
	}
	defer devnull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, exitf(ExitInternal, "mount --daemon: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, exitf(ExitInternal, "mount --daemon: %w", err)
	}
	cmd := &exec.Cmd{
		Path:   exe,
		Args:   argv,
		Env:    append(os.Environ(), daemonChildEnv+"=1"),
		Stdin:  devnull,
		Stdout: outW,
		Stderr: errW,
		// A session of its own: no terminal, no SIGHUP or Ctrl-C of the shell.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	markInheritedCloseOnExec()
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, exitf(ExitInternal, "mount --daemon: cannot start %s: %w", exe, err)
	}
	return &daemonProc{cmd: cmd, stdout: outR, stderr: errR}, nil
}

// readyLine passes the server's standard output on to stdout until its
// readiness line, which it returns ("" if the server closed its standard
// output first). Once ready, it waits briefly for the server to close
// both pipes (it does so as it writes the line), so that the server holds
// nothing of ours when the command returns.
func (d *daemonProc) readyLine(stdout io.Writer, errDone <-chan struct{}) string {
	defer d.stdout.Close()
	readyPrefix := strings.SplitN(readyFormat, "%", 2)[0]
	ready := ""
	sc := bufio.NewScanner(d.stdout)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, readyPrefix) {
			ready = line
			break
		}
		fmt.Fprintln(stdout, sc.Text())
	}
	if ready == "" {
		return ""
	}
	outDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, d.stdout)
		close(outDone)
	}()
	limit := time.After(daemonStderrDrain)
	for _, ch := range []<-chan struct{}{outDone, errDone} {
		select {
		case <-ch:
		case <-limit:
		}
	}
	return ready
}

// daemonFailure is the command's error when the background server ended
// before it was ready (err is what cmd.Wait returned).
func daemonFailure(err error) error {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return exitf(ExitMount, "mount: the background server stopped before the mount was ready")
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitf(ExitMount, "mount: the background server was killed by %v before the mount was ready", ws.Signal())
		}
		// It has said why on the standard error we passed on.
		return exitf(ee.ExitCode(), "")
	}
	return exitf(ExitInternal, "mount --daemon: %w", err)
}

// markInheritedCloseOnExec keeps the descriptors this process inherited
// (a script's `exec 9>lockfile; flock 9`, a caller's pipe) from passing on
// to the long-lived server, which would hold the script's lock, or keep
// the caller's pipe open, for as long as the mount lives. Go opens its own
// descriptors close-on-exec already.
func markInheritedCloseOnExec() {
	fds, err := procfs.SelfFDs()
	if err != nil {
		return
	}
	for _, fd := range fds {
		if fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// detachFromForeground is the background server's side, once mounted:
// it sends the log and standard error where they go from now on, prints
// the readiness line for the foreground process, and lets go of standard
// output and the working directory.
func detachFromForeground(log *logrus.Logger, logFile *os.File, readyLine string) error {
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	if logFile == nil {
		hook, err := lsyslog.NewSyslogHook("", "", syslog.LOG_DAEMON|syslog.LOG_INFO, "scanlockfs")
		if err != nil {
			log.WithError(err).Warn("no system log to write to: from now on the log is discarded; give --log-file (log_file=PATH) to keep it")
		} else {
			log.AddHook(hook)
		}
		log.SetOutput(io.Discard)
	}
	errTarget := devnull
	if logFile != nil {
		errTarget = logFile // a Go panic trace, say, ends up in the log
	}
	if err := unix.Dup3(int(errTarget.Fd()), 2, 0); err != nil {
		return err
	}
	// Standard output goes to /dev/null before the line is written (on a
	// copy of the pipe, closed right after), so that once the foreground
	// process has the line, this process keeps no pipe of its caller.
	fd, err := unix.FcntlInt(1, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return err
	}
	pipe := os.NewFile(uintptr(fd), "ready")
	defer pipe.Close()
	if err := unix.Dup3(int(devnull.Fd()), 1, 0); err != nil {
		return err
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	_, err = io.WriteString(pipe, readyLine)
	return err
}

// openLogFile opens --log-file for appending.
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, exitf(ExitUsage, "--log-file %s: %w: give a writable file", path, err)
	}
	return f, nil
}
