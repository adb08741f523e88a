// Package mountcmd is the scanlockfs command line: it maps flags to
// fusefs and lockmgr options, builds the logger, owns the exit codes and
// the mount lifecycle. main.go only calls Main.
//
// Each command lives in its own file and registers a *cli.Command in
// commands().
package mountcmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
)

// Version is set at build time with -ldflags "-X scanlockfs/mountcmd.Version=...".
var Version = "dev"

// Exit codes. They are documented in the README; scripts rely on them.
const (
	ExitOK       = 0 // success, or a clean unmount
	ExitInternal = 1 // an unexpected failure (a bug, or the system refused)
	ExitUsage    = 2 // bad arguments or flags
	ExitTimeout  = 3 // the scan lock was not granted before the timeout
	ExitBusy     = 4 // --nonblock and the scan lock is held
	ExitMount    = 5 // the mount could not be set up (mountpoint, FUSE)
	ExitNotFound = 6 // SOURCE, MOUNTPOINT or the scan does not exist
)

// exitError carries an exit code and a message for the user (no stack).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

// exitf returns an error that makes the program print the message and
// exit with code.
func exitf(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// usageErrorf is exitf(ExitUsage, ...).
func usageErrorf(format string, args ...any) error { return exitf(ExitUsage, format, args...) }

// commands lists every command; one file each.
var commands []*cli.Command

// register adds a command to the app; called from init() of each command file.
func register(c *cli.Command) { commands = append(commands, c) }

// NewApp builds the command line application.
func NewApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                 "scanlockfs",
		Usage:                "scan locking for programs that know nothing about locks",
		Version:              Version,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		Suggest:              true,
		Commands:             commands,
		// Errors are printed once, by Main, with the right exit code.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageErrorf("%v (see '%s --help')", err, c.Command.HelpName)
		},
	}
	return app
}

// Main runs the command line with args (os.Args) and returns the exit code.
func Main(args []string) int {
	app := NewApp(os.Stdout, os.Stderr)
	err := app.Run(args)
	if err == nil {
		return ExitOK
	}
	code := ExitInternal
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	} else if isUsageError(err) {
		code = ExitUsage
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(os.Stderr, "scanlockfs: %s\n", msg)
	}
	return code
}

// isUsageError recognises urfave/cli's own argument errors, which are not
// typed.
func isUsageError(err error) bool {
	var es interface{ Errors() []error }
	if errors.As(err, &es) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"flag provided but not defined", "Required flag", "invalid value", "flag needs an argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// Logging flags shared by the commands that log.
var (
	logLevelFlag = &cli.StringFlag{
		Name:  "log-level",
		Value: "info",
		Usage: "log level: error, warn, info, debug or trace",
	}
	logFormatFlag = &cli.StringFlag{
		Name:  "log-format",
		Value: "text",
		Usage: "log format: text or json",
	}
)

// newLogger builds the logger from --log-level and --log-format, writing
// to standard error.
func newLogger(c *cli.Context) (*logrus.Logger, error) {
	l := logrus.New()
	l.SetOutput(c.App.ErrWriter)
	lvl, err := logrus.ParseLevel(c.String(logLevelFlag.Name))
	if err != nil {
		return nil, usageErrorf("--log-level %q: want error, warn, info, debug or trace", c.String(logLevelFlag.Name))
	}
	l.SetLevel(lvl)
	switch f := c.String(logFormatFlag.Name); f {
	case "text", "":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, usageErrorf("--log-format %q: want text or json", f)
	}
	return l, nil
}
