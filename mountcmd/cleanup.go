package mountcmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"scanlockfs/lockmgr"
)

// cleanupCommand is `scanlockfs cleanup`.
func cleanupCommand() *cli.Command {
	return &cli.Command{
		Name:      "cleanup",
		Usage:     "remove stale lock files of SOURCE (never a held one)",
		ArgsUsage: "SOURCE",
		UsageText: "scanlockfs cleanup [--dry-run] [--lock-dir DIR] SOURCE",
		Description: "Removes from SOURCE/.locks the lock files nobody holds, with their .info and .gate files,\n" +
			".gate files no writer waits on whose lock file is gone, .wait files nobody records a waiter\n" +
			"in, and .info and temporary files left\n" +
			"by dead processes (after a crash or a SIGKILL). A lock\n" +
			"file is removed only while cleanup itself holds it exclusively, so a lock held by a mount,\n" +
			"'scanlockfs run' or plantdb is never touched. The mount does the same when it starts.\n" +
			"Only files that look like scanlockfs's or plantdb's are removed (an empty lock file, an .info\n" +
			"that parses, an empty .gate), never through a symbolic link; what is left alone is logged with\n" +
			"the reason. A lock directory that is a symbolic link is refused (replace it with a directory).\n" +
			"Prints each removed path on standard output, one per line, and a summary on standard error.\n\n" +
			"Exit codes: 0 done (also when there was nothing to remove); 2 bad arguments; 6 SOURCE\n" +
			"missing; 1 some files could not be removed; 7 --etcd and the cluster did not answer.\n" +
			"With --etcd it also removes the cluster's lock keys that no lease will ever remove (put by\n" +
			"hand without a lease, or not a holder's); keys of live sessions are left alone.\n\n" +
			"Examples:\n" +
			"  scanlockfs cleanup --dry-run /data/db    # what would go\n" +
			"  scanlockfs cleanup /data/db",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only print what would be removed"},
			lockDirFlag(),
			logLevelFlag("info"),
			logFormatFlag(),
		}, etcdFlags()...),
		Action: cleanupAction,
	}
}

func cleanupAction(c *cli.Context) error {
	if c.NArg() != 1 {
		if _, err := scanArgs("cleanup", c.Args().Tail(), "scanlockfs cleanup [--dry-run] SOURCE"); err != nil {
			return err
		}
		return usageErrorf("cleanup: want exactly one SOURCE, got %d arguments: scanlockfs cleanup [--dry-run] SOURCE", c.NArg())
	}
	source, err := sourceDir(c.Args().First())
	if err != nil {
		return err
	}
	source = mountpointToSource(c.App.ErrWriter, "cleanup", source)
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	dry := c.Bool("dry-run")
	lockDir := filepath.Join(source, lockmgr.LockDirName)
	if d := c.String(flagLockDir); d != "" {
		if lockDir, err = filepath.Abs(d); err != nil {
			return exitf(ExitInternal, "cleanup: --lock-dir %s: %w", d, err)
		}
	}
	// Without a lock directory there is nothing to clean, and creating
	// one (as lockmgr.New would) is not cleaning up.
	if _, err := os.Stat(lockDir); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(c.App.ErrWriter, "nothing to clean: %s does not exist\n", lockDir)
		return nil
	}
	eopts, closeEtcd, err := etcdOptions(c)
	defer closeEtcd()
	if err != nil {
		return err
	}
	m, err := lockmgr.New(source, append([]lockmgr.Option{lockmgr.WithLockDir(lockDir), lockmgr.WithStaleCleanup(false),
		lockmgr.WithInfoFiles(false), lockmgr.WithLogger(log)}, eopts...)...)
	if err != nil {
		return exitf(clusterExit(err, ExitInternal), "cleanup: %w", err)
	}
	defer m.Close()
	keys, kerr := m.PurgeClusterStale(dry)
	for _, k := range keys {
		fmt.Fprintln(c.App.Writer, k)
	}
	if kerr != nil {
		return exitf(ExitCluster, "cleanup: %w", kerr)
	}

	held := 0
	if active, err := m.List(); err == nil {
		held = len(active)
	}
	removed, perr := m.PurgeStale(dry)
	for _, p := range removed {
		fmt.Fprintln(c.App.Writer, p)
	}
	verb := "removed"
	if dry {
		verb = "would remove"
	}
	fmt.Fprintf(c.App.ErrWriter, "%s %d stale file(s) in %s; %d scan(s) locked right now left alone\n",
		verb, len(removed), lockDir, held)
	if perr != nil {
		return exitf(ExitInternal, "cleanup: some files in %s could not be checked or removed: %w (check their owner and permissions)", lockDir, perr)
	}
	return nil
}
