package mountcmd

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// Exit codes of scanlockfs, defined here only. The README (section "Exit
// codes"), the manual page (man.go renders this table) and each command's
// --help list them; scripts and the tests (by these names) rely on them.
const (
	ExitOK       = 0 // success, or a clean unmount
	ExitInternal = 1 // an unexpected failure (a bug, or the system refused)
	ExitUsage    = 2 // bad arguments or flags
	ExitTimeout  = 3 // the scan lock was not granted before the timeout
	ExitBusy     = 4 // --nonblock and the scan lock is held; unmount: the mount is in use
	ExitMount    = 5 // the mount could not be set up or taken down (mountpoint, FUSE), or a second signal stopped it with files open
	ExitNotFound = 6 // SOURCE, MOUNTPOINT or the scan does not exist; unmount: nothing mounted
	ExitCluster  = 7 // --etcd: the etcd cluster could not be reached or refused us

	// The run command exits with COMMAND's status once COMMAND has been
	// started, as shells do; these are its own codes around that.
	ExitCannotExec      = 126 // COMMAND exists but cannot be executed
	ExitCommandNotFound = 127 // COMMAND was not found
	ExitSignalBase      = 128 // + signal number: COMMAND (or the wait for the lock) was killed by a signal
)

// exitCodeDocs say what each exit code means, for the EXIT STATUS section
// of the manual page (the README has the same table).
var exitCodeDocs = []struct{ code, meaning string }{
	{fmt.Sprint(ExitOK), "success; mount: unmounted cleanly; status: the query worked (also when everything is free)"},
	{fmt.Sprint(ExitInternal), "internal error"},
	{fmt.Sprint(ExitUsage), "usage: bad or missing arguments or options, invalid scan id, unknown command or flag"},
	{fmt.Sprint(ExitTimeout), "run: the lock was not granted before --timeout"},
	{fmt.Sprint(ExitBusy), "run --nonblock: the scan is held; unmount: the mount is busy (the programs keeping it busy are listed)"},
	{fmt.Sprint(ExitMount), "mount: the mount could not be set up (mount point unusable, dead mount without --recover, FUSE refused), or was stopped by a second signal with files open; unmount failed"},
	{fmt.Sprint(ExitNotFound), "SOURCE, MOUNTPOINT or the mount does not exist"},
	{fmt.Sprint(ExitCluster), "--etcd: the etcd cluster did not answer at start (the message names the endpoints) or refused the request"},
	{"N", "run: COMMAND's own exit status"},
	{fmt.Sprintf("%d, %d", ExitCannotExec, ExitCommandNotFound), "run: COMMAND is not executable, not found"},
	{fmt.Sprintf("%d+N", ExitSignalBase), "run: COMMAND was killed by signal N, or run was, while waiting for the lock"},
}

// exitError carries an exit code and a message for the user (no stack).
// Main prints the message once and exits with the code.
type exitError struct {
	code int
	err  error
}

var _ cli.ExitCoder = (*exitError)(nil)

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

// exitf returns an error that makes the program print the message and
// exit with code. %w in format keeps the cause for errors.Is and As.
func exitf(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// usageErrorf is exitf(ExitUsage, ...).
func usageErrorf(format string, args ...any) error { return exitf(ExitUsage, format, args...) }
