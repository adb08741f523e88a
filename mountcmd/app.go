// Package mountcmd is the scanlockfs command line: it maps flags to
// fusefs and lockmgr options, builds the logger, owns the exit codes and
// the mount lifecycle. main.go only calls Main.
//
// NewApp builds the cli.App and lists the commands; each command lives in
// its own file (mount.go, run.go, status.go, cleanup.go, unmount.go,
// version.go, man.go; completion here) as a constructor. The package keeps
// no state between calls: the command line --daemon runs again is an
// argument, and its package-level values are constant tables, sentinel
// errors and Version (set by the linker).
//
// The mount command is flags -> Config -> the lifecycle of lifecycle.go:
// StartMount (check SOURCE and MOUNTPOINT, clear a dead mount with
// --recover, start the lock manager, mount), Announce (readiness line,
// READY=1), Serve (first SIGINT/SIGTERM: STOPPING=1, then Shutdown, which
// retries the unmount for 3 s and detaches lazily; a second signal stops
// at once), Wait. Tests drive it without the command line. Around it:
// mount_options.go (-o and the mount(8) helper form), mount_recover.go
// (dead mounts), mount_daemon.go (--daemon) and notify.go (systemd).
//
// The exit codes are defined once, in exitcodes.go, and exported for the
// tests. Commands return errors made with exitf or usageErrorf, wrapping
// their cause with %w: Main prints them once, without a stack, and exits
// with their code. Errors are classified by type (errors.Is/As), never by
// message; the one exception is fusermount3's output in unmount.go, a
// program's text that carries no type. Errors name the path involved and
// say what to do.
//
// run holds a scan lock in this process while its COMMAND runs: the lock
// descriptor is close-on-exec, so the child never holds it, and run
// catches the usual termination signals (passing them to the child)
// rather than die and unlock under a running child.
package mountcmd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
)

// NewApp builds the command line application with every command. argv
// is the command line Main runs (mount --daemon starts it again in the
// background); nil means os.Args.
func NewApp(stdout, stderr io.Writer, argv []string) *cli.App {
	commands := newCommands(argv)
	for _, cmd := range commands {
		if cmd.OnUsageError == nil {
			cmd.OnUsageError = onUsageError
		}
		// A leaf command takes positional arguments (SOURCE, MOUNTPOINT):
		// without this, a directory named "help" or "h" would show help.
		if len(cmd.Subcommands) == 0 {
			cmd.HideHelpCommand = true
		}
	}
	return &cli.App{
		UsageText: "scanlockfs [global options] command [command options] [arguments...]",
		Description: "Run 'scanlockfs COMMAND --help' for the options and examples of a command.\n" +
			"'scanlockfs SOURCE MOUNTPOINT -o OPTIONS', the form mount(8) uses for fstab type fuse.scanlockfs,\n" +
			"is 'scanlockfs mount' in the background (see 'scanlockfs mount --help').\n" +
			"Exit codes: 0 ok, 1 internal error, 2 usage, 3 lock timeout, 4 busy, 5 mount failed, 6 not found;\n" +
			"run: COMMAND's own status, 126 not executable, 127 not found, 128+N killed by signal N.",
		Name:                 "scanlockfs",
		Usage:                "scan locking for programs that know nothing about locks",
		Version:              version(),
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		Suggest:              true,
		Commands:             commands,
		// Errors are printed once, by Main, with the right exit code.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
		// Reached only when the first argument names no command.
		Action: func(c *cli.Context) error {
			if !c.Args().Present() {
				return cli.ShowAppHelp(c)
			}
			return unknownCommand(c.App.Commands, c.Args().First())
		},
	}
}

// newCommands lists every command, in the order --help shows them.
func newCommands(argv []string) []*cli.Command {
	return []*cli.Command{
		completionCommand(),
		cleanupCommand(),
		manCommand(),
		mountCommand(argv),
		runCommand(),
		statusCommand(),
		unmountCommand(),
		versionCommand(),
	}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	name := c.App.Name
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	return usageErrorf("%v (see '%s --help')", err, name)
}

// unknownCommand is the usage error for a command name nobody registered,
// with the closest registered name as a hint.
func unknownCommand(commands []*cli.Command, name string) error {
	hint := ""
	best := 3 // at most two edits away, or a prefix
	for _, c := range commands {
		if c.Hidden {
			continue
		}
		for _, n := range c.Names() {
			d := editDistance(name, n)
			if strings.HasPrefix(n, name) {
				d = 1
			}
			if d < best {
				best, hint = d, fmt.Sprintf("; did you mean '%s'?", n)
			}
		}
	}
	return usageErrorf("unknown command %q%s (see 'scanlockfs --help' for the list)", name, hint)
}

// editDistance is the Levenshtein distance of a and b (short words only).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Main runs the command line with args (os.Args) and returns the exit code.
func Main(args []string) int {
	if isCompletionAfterDoubleDash(args) {
		// urfave/cli turns completion off after "--" and would run the
		// command with the completion flag as one more argument: for
		// `run ... -- COMMAND`, pressing TAB would start COMMAND. Answer
		// with no suggestions instead, so the shell completes file names.
		return ExitOK
	}
	// mount(8), through mount.fuse3, runs `scanlockfs SOURCE MOUNTPOINT -o
	// OPTIONS` for an fstab line of type fuse.scanlockfs.
	if margs, ok := mountHelperArgs(args); ok {
		args = margs
	}
	// One format everywhere: --version prints what `version` prints
	// first. urfave/cli has only this process-wide hook for it.
	cli.VersionPrinter = printVersion
	app := NewApp(os.Stdout, os.Stderr, args)
	// `scanlockfs help NAME` for an unknown NAME would otherwise exit 3,
	// the lock-timeout code.
	var badTopic string
	app.CommandNotFound = func(_ *cli.Context, name string) { badTopic = name }
	err := app.Run(args)
	if err == nil && badTopic != "" {
		err = unknownCommand(app.Commands, badTopic)
	}
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

// completionFlag is the argument urfave/cli's completion scripts append.
const completionFlag = "--generate-bash-completion"

func isCompletionAfterDoubleDash(args []string) bool {
	if len(args) < 2 || args[len(args)-1] != completionFlag {
		return false
	}
	for _, a := range args[1 : len(args)-1] {
		if a == "--" {
			return true
		}
	}
	return false
}

// isUsageError recognises urfave/cli's own argument errors that do not
// pass through OnUsageError (which makes every flag parsing error an
// exitError): the ones it collects in a list.
func isUsageError(err error) bool {
	var es interface{ Errors() []error }
	return errors.As(err, &es)
}

// Names of the flags several commands share.
const (
	flagLogLevel  = "log-level"
	flagLogFormat = "log-format"
	flagLockDir   = "lock-dir"
)

// logLevelFlag is --log-level with its default. Each command gets flags
// of its own: urfave/cli records in a flag whether it was set.
func logLevelFlag(def string) cli.Flag {
	return &cli.StringFlag{Name: flagLogLevel, Value: def, Usage: "log level: error, warn, info, debug or trace"}
}

// logFormatFlag is --log-format.
func logFormatFlag() cli.Flag {
	return &cli.StringFlag{Name: flagLogFormat, Value: "text", Usage: "log format: text or json"}
}

// lockDirFlag is --lock-dir of the commands that use the lock files of
// SOURCE (mount, run, cleanup, status); every process on a scan tree must
// agree on it.
func lockDirFlag() cli.Flag {
	return &cli.StringFlag{
		Name:      flagLockDir,
		Usage:     "lock directory `DIR`, if not SOURCE/.locks (must be the same for every program on SOURCE)",
		TakesFile: true,
	}
}

// scanArgs checks the SCAN arguments of a command that takes them after
// SOURCE. urfave/cli stops reading flags at the first argument, so a flag
// typed after SOURCE would arrive here as a scan id: refuse that with the
// fix. A scan whose name starts with "-" can follow "--".
func scanArgs(cmd string, args []string, usage string) ([]string, error) {
	for i, a := range args {
		if a == "--" {
			return append(args[:i:i], args[i+1:]...), nil
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			return nil, usageErrorf("%s: %q after SOURCE looks like a flag: flags go before SOURCE (%s); "+
				"for a scan whose name starts with '-', put '--' before it", cmd, a, usage)
		}
	}
	return args, nil
}

// sourceDir checks that arg names an existing directory and returns its
// absolute path; the error says what to do and carries the exit code.
func sourceDir(arg string) (string, error) {
	if arg == "" {
		return "", usageErrorf("SOURCE is empty: give the scan database directory")
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", exitf(ExitInternal, "SOURCE %s: %w", arg, err)
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", exitf(ExitNotFound, "SOURCE %s does not exist: give the scan database directory (the one holding the scan folders)", abs)
	case err != nil:
		return "", exitf(ExitInternal, "SOURCE %s: %w", abs, err)
	case !st.IsDir():
		return "", usageErrorf("SOURCE %s is not a directory: give the scan database directory, not a file in it", abs)
	}
	return abs, nil
}

// newLogger builds the logger from --log-level and --log-format, writing
// to standard error.
func newLogger(c *cli.Context) (*logrus.Logger, error) {
	l := logrus.New()
	l.SetOutput(c.App.ErrWriter)
	lvl, err := logrus.ParseLevel(c.String(flagLogLevel))
	if err != nil {
		return nil, usageErrorf("--log-level %q: want error, warn, info, debug or trace", c.String(flagLogLevel))
	}
	l.SetLevel(lvl)
	switch f := c.String(flagLogFormat); f {
	case "text", "":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, usageErrorf("--log-format %q: want text or json", f)
	}
	return l, nil
}

// completionCommand is `scanlockfs completion`, which serves the whole app.
func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		UsageText: "scanlockfs completion bash|zsh|fish",
		Description: "Completes command names, flags and, for run and status, the scan ids of SOURCE.\n" +
			"Completion never runs anything after '--' (the COMMAND of run).\n\n" +
			"Examples:\n" +
			"  scanlockfs completion bash | sudo tee /etc/bash_completion.d/scanlockfs\n" +
			"  source <(scanlockfs completion bash)            # this shell only\n" +
			"  scanlockfs completion zsh > \"${fpath[1]}/_scanlockfs\"\n" +
			"  scanlockfs completion fish > ~/.config/fish/completions/scanlockfs.fish",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("completion: give one shell: bash, zsh or fish")
			}
			var script string
			switch sh := c.Args().First(); sh {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return exitf(ExitInternal, "generating fish completion: %w", err)
				}
				script = s
			default:
				return usageErrorf("completion: unknown shell %q: want bash, zsh or fish", sh)
			}
			_, err := io.WriteString(c.App.Writer, script)
			return err
		},
	}
}

// bashCompletion asks the program itself for suggestions, like
// urfave/cli's script, but needs no bash-completion package, uses no eval
// (so that typed $(...) is never executed) and stops at "--". A word being
// typed that is just "--" is passed as "-": urfave/cli turns completion
// off when "--" is among the arguments, and "-" asks for every flag
// (compgen keeps the long ones).
const bashCompletion = `# bash completion for scanlockfs
_scanlockfs() {
	local cur=${COMP_WORDS[COMP_CWORD]} w opts
	local words=("${COMP_WORDS[@]:0:COMP_CWORD}")
	for w in "${words[@]:1}"; do
		[[ $w == -- ]] && return 0
	done
	if [[ $cur == -* ]]; then
		local ask=$cur
		[[ $ask == -- ]] && ask=-
		opts=$("${words[0]}" "${words[@]:1}" "$ask" --generate-bash-completion 2>/dev/null)
	else
		opts=$("${words[0]}" "${words[@]:1}" --generate-bash-completion 2>/dev/null)
	fi
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o bashdefault -o default -F _scanlockfs scanlockfs
`

const zshCompletion = `#compdef scanlockfs
_scanlockfs() {
	local -a opts
	local cur=${words[CURRENT]}
	(( ${words[(I)--]} && ${words[(I)--]} < CURRENT )) && { _files; return }
	if [[ $cur == -* ]]; then
		local ask=$cur
		[[ $ask == -- ]] && ask=-
		opts=("${(@f)$(${words[1,CURRENT-1]} $ask --generate-bash-completion 2>/dev/null)}")
	else
		opts=("${(@f)$(${words[1,CURRENT-1]} --generate-bash-completion 2>/dev/null)}")
	fi
	if [[ -n ${opts[1]} ]]; then
		_describe 'values' opts
	else
		_files
	fi
}
compdef _scanlockfs scanlockfs
`
