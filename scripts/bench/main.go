// Command bench measures what scanlockfs costs, side by side in one run:
// every workload runs on SOURCE directly (native, the physical limit),
// through a plain go-fuse loopback mount with the same mount options (the
// cost of FUSE itself) and through a scanlockfs mount (FUSE plus
// locking), with repetitions interleaved so that machine noise hits all
// three alike. The lock manager alone is measured against a Python peer
// that follows plantdb's protocol.
//
// It builds the scanlockfs binary and the loopback program, creates its
// data under a temporary directory, mounts and always unmounts by itself,
// prints a Markdown table of the times and one of the FUSE requests per
// operation on each FUSE target (requests.go), and writes a CSV (and,
// with -plot, a bar chart of the ratios).
//
//	./scripts/bench.sh [-plot ratios.png] [-csv bench.csv] [flags]
//
// It is a Go module of its own (scripts/bench/go.mod: the plot library
// stays out of the product's go.mod); bench.sh builds it there and runs it
// from the top of the checkout.
//
// The bench process is the client; the FUSE servers and the lock peers
// run in separate processes (helpers re-execute this binary).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// config holds every flag. Sizes default to a run that finishes within
// five minutes on a 2-core machine.
type config struct {
	Reps, Warmup, SeqReps, MemReps int
	Only                           string

	CSV, Markdown, Plot string
	WorkDir             string
	Keep                bool
	Repo                string
	ScanlockfsBin       string
	LoopbackBin         string
	BuildFlags          string
	MountTimeout        time.Duration
	Tiny                bool
	Verbose             bool

	Files, Scans              int // 1
	StatFiles, ReaddirEntries int // 2
	CreateFiles               int // 3
	SeqSize                   sizeFlag
	TreeFiles                 int // 5
	TreeFileSize              sizeFlag
	ParFiles                  int // 6
	ParFileSize               sizeFlag

	LockOps, PyLockOps             int // 7
	Handovers, PyHandovers         int
	Readers                        int
	WriterWaits, PyWriterWaits     int
	WriterTimeout, ReaderHold      time.Duration
	WakeOpeners                    int // 8
	PlantdbWaits                   int // 10
	MemScans, MemHandlesPerProcess int // 9
}

func defaultConfig() config {
	// The sizes are 10,000 files for workloads 1-3 and a 1 GiB
	// file; on a 2-core VM a FUSE round trip costs tens of µs, so the
	// defaults are smaller to finish in five minutes. Per-operation
	// figures and ratios do not depend on the count; give the flags to
	// run at the sizes.
	return config{
		Reps: 5, Warmup: 1, SeqReps: 3, MemReps: 2,
		CSV:          "bench.csv",
		MountTimeout: 30 * time.Second,

		Files: 4000, Scans: 100,
		StatFiles: 5000, ReaddirEntries: 10000,
		CreateFiles:  4000,
		SeqSize:      512 << 20,
		TreeFiles:    1000,
		TreeFileSize: 16 << 10,
		ParFiles:     500,
		ParFileSize:  64 << 10,

		LockOps: 5000, PyLockOps: 1000,
		Handovers: 100, PyHandovers: 40,
		Readers:     8,
		WriterWaits: 40, PyWriterWaits: 10,
		WriterTimeout: time.Second,
		ReaderHold:    5 * time.Millisecond,
		WakeOpeners:   100,
		PlantdbWaits:  20,
		MemScans:      10000, MemHandlesPerProcess: 1000,
	}
}

// tinyConfig shrinks every size for the smoke test and quick checks;
// flags given explicitly still win.
func tinyConfig() config {
	c := defaultConfig()
	c.Reps, c.Warmup, c.SeqReps, c.MemReps = 2, 0, 1, 1
	c.Files, c.Scans = 60, 6
	c.StatFiles, c.ReaddirEntries = 50, 50
	c.CreateFiles = 50
	c.SeqSize = 4 << 20
	c.TreeFiles, c.TreeFileSize = 30, 4<<10
	c.ParFiles, c.ParFileSize = 10, 8<<10
	c.LockOps, c.PyLockOps = 50, 20
	c.Handovers, c.PyHandovers = 5, 2
	c.Readers = 3
	c.WriterWaits, c.PyWriterWaits = 3, 1
	c.WriterTimeout = 300 * time.Millisecond
	c.ReaderHold = 2 * time.Millisecond
	c.WakeOpeners = 5
	c.PlantdbWaits = 3
	c.MemScans, c.MemHandlesPerProcess = 40, 20
	return c
}

func (c *config) register(fs *flag.FlagSet) {
	fs.IntVar(&c.Reps, "reps", c.Reps, "measured repetitions per workload and target (interleaved)")
	fs.IntVar(&c.Warmup, "warmup", c.Warmup, "unmeasured warm-up repetitions before the measured ones")
	fs.IntVar(&c.SeqReps, "seq-reps", c.SeqReps, "repetitions of the sequential 1 GiB workload (4)")
	fs.IntVar(&c.MemReps, "mem-reps", c.MemReps, "repetitions of the memory workload (9), each on fresh mounts")
	fs.StringVar(&c.Only, "only", c.Only, "comma-separated workload numbers to run (default: all), e.g. 1,2,7")
	fs.StringVar(&c.CSV, "csv", c.CSV, "write the results as CSV to this file (empty: none)")
	fs.StringVar(&c.Markdown, "markdown", c.Markdown, "also write the Markdown report to this file")
	fs.StringVar(&c.Plot, "plot", c.Plot, "draw the ratios as a bar chart into this PNG file")
	fs.StringVar(&c.WorkDir, "workdir", c.WorkDir, "parent of the temporary data and mount directories (default: $TMPDIR)")
	fs.BoolVar(&c.Keep, "keep", c.Keep, "keep the temporary directory (data, daemon logs) after the run")
	fs.StringVar(&c.Repo, "repo", c.Repo, "scanlockfs checkout to build from (default: found from the current directory)")
	fs.StringVar(&c.ScanlockfsBin, "scanlockfs-bin", c.ScanlockfsBin, "use this scanlockfs binary instead of building one")
	fs.StringVar(&c.LoopbackBin, "loopback-bin", c.LoopbackBin, "use this loopback binary instead of building one")
	fs.StringVar(&c.BuildFlags, "build-flags", c.BuildFlags, "extra go build flags for the two binaries (e.g. -race: the figures then mean nothing)")
	fs.DurationVar(&c.MountTimeout, "mount-timeout", c.MountTimeout, "how long to wait for a mount to become ready")
	fs.BoolVar(&c.Verbose, "v", c.Verbose, "log every sample as it is measured")
	fs.BoolVar(&c.Tiny, "tiny", c.Tiny, "tiny sizes for a quick check (explicit flags still win); figures are meaningless")

	fs.IntVar(&c.Files, "files", c.Files, "1: existing files opened")
	fs.IntVar(&c.Scans, "scans", c.Scans, "1: scans the files are spread over")
	fs.IntVar(&c.StatFiles, "stat-files", c.StatFiles, "2: files stat'ed")
	fs.IntVar(&c.ReaddirEntries, "readdir-entries", c.ReaddirEntries, "2: entries of the directory read")
	fs.IntVar(&c.CreateFiles, "create-files", c.CreateFiles, "3: small files created and unlinked")
	fs.Var(&c.SeqSize, "seq-size", "4: size of the sequentially read and written file (e.g. 1G, 256M)")
	fs.IntVar(&c.TreeFiles, "tree-files", c.TreeFiles, "5: files in the scan tree for tar and cp -r")
	fs.Var(&c.TreeFileSize, "tree-file-size", "5: size of each file of the scan tree")
	fs.IntVar(&c.ParFiles, "par-files", c.ParFiles, "6: files read by each of the 4 parallel readers")
	fs.Var(&c.ParFileSize, "par-file-size", "6: size of each of those files")
	fs.IntVar(&c.LockOps, "lock-ops", c.LockOps, "7: uncontended acquire+release per repetition (Go)")
	fs.IntVar(&c.PyLockOps, "py-lock-ops", c.PyLockOps, "7: uncontended acquire+release per repetition (Python peer)")
	fs.IntVar(&c.Handovers, "handovers", c.Handovers, "7: cross-process handovers measured (Go)")
	fs.IntVar(&c.PyHandovers, "py-handovers", c.PyHandovers, "7: cross-process handovers measured (Python peer, 0.1 s polling)")
	fs.IntVar(&c.Readers, "readers", c.Readers, "7: reader processes keeping the scan shared")
	fs.IntVar(&c.WriterWaits, "writer-waits", c.WriterWaits, "7: exclusive requests of the writer under continuous readers (Go)")
	fs.IntVar(&c.PyWriterWaits, "py-writer-waits", c.PyWriterWaits, "7: the same for the Python peer")
	fs.DurationVar(&c.WriterTimeout, "writer-timeout", c.WriterTimeout, "7: timeout of each of those exclusive requests")
	fs.DurationVar(&c.ReaderHold, "reader-hold", c.ReaderHold, "7: how long each reader holds its shared lock before it takes it again")
	fs.IntVar(&c.WakeOpeners, "wake-openers", c.WakeOpeners, "8: opener processes blocked behind a writer")
	fs.IntVar(&c.PlantdbWaits, "plantdb-waits", c.PlantdbWaits, "10: requests of the plantdb reader under continuous mount writers")
	fs.IntVar(&c.MemScans, "mem-scans", c.MemScans, "9: scans locked at once, one open handle each")
	fs.IntVar(&c.MemHandlesPerProcess, "mem-handles", c.MemHandlesPerProcess, "9: open handles per client process")
}

func main() {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:]))
	}
	noAsyncPreempt()
	os.Exit(cliMain(os.Args[1:], os.Stdout, os.Stderr))
}

// noAsyncPreempt re-executes the bench without asynchronous preemption:
// its signals would interrupt the client's FUSE calls and add INTERRUPT
// requests to what is measured. (GODEBUG cannot be set from inside.)
func noAsyncPreempt() {
	if strings.Contains(os.Getenv("GODEBUG"), "asyncpreemptoff=1") {
		return
	}
	self, err := os.Executable()
	if err != nil {
		return
	}
	env := append(os.Environ(), "GODEBUG=asyncpreemptoff=1,"+os.Getenv("GODEBUG"))
	_ = syscall.Exec(self, os.Args, env) // on failure, run as we are
}

// cliMain parses args and runs the benchmark; it returns the exit code.
func cliMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := run(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := defaultConfig()
	cfg.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ./scripts/bench.sh [flags]\n\n"+
			"Measures workloads 1-9 of the benchmark issue (10: the cluster lock against a local etcd; 11: next to plantdb; 12: find -ls; 13: an image pipeline) natively, through a plain loopback\n"+
			"mount and through scanlockfs; prints Markdown tables of the times and of the FUSE requests per operation,\nwrites a CSV.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q (see -h)", fs.Args())
	}
	if cfg.Tiny {
		// Start from the tiny sizes and apply the explicit flags again.
		tiny := tinyConfig()
		tfs := flag.NewFlagSet("tiny", flag.ContinueOnError)
		tiny.register(tfs)
		var err error
		fs.Visit(func(f *flag.Flag) {
			if e := tfs.Set(f.Name, f.Value.String()); e != nil && err == nil {
				err = e
			}
		})
		if err != nil {
			return cfg, err
		}
		cfg = tiny
	}
	return cfg, cfg.validate()
}

func (c *config) validate() error {
	switch {
	case c.Reps < 1 || c.SeqReps < 1 || c.MemReps < 1:
		return errors.New("-reps, -seq-reps and -mem-reps must be at least 1")
	case c.Warmup < 0:
		return errors.New("-warmup must not be negative")
	case c.Files < 1 || c.Scans < 1 || c.Files < c.Scans:
		return errors.New("-files and -scans must be at least 1, and -files at least -scans")
	case c.StatFiles < 1 || c.ReaddirEntries < 1 || c.CreateFiles < 1:
		return errors.New("-stat-files, -readdir-entries and -create-files must be at least 1")
	case c.SeqSize < 1<<20:
		return errors.New("-seq-size must be at least 1M")
	case c.TreeFiles < 1 || c.ParFiles < 1 || c.WakeOpeners < 1 || c.PlantdbWaits < 1:
		return errors.New("-tree-files, -par-files, -wake-openers and -plantdb-waits must be at least 1")
	case c.Readers < 1 || c.Handovers < 1 || c.PyHandovers < 1 || c.WriterWaits < 1 || c.PyWriterWaits < 1:
		return errors.New("-readers, -handovers, -py-handovers, -writer-waits and -py-writer-waits must be at least 1")
	case c.MemScans < 1 || c.MemHandlesPerProcess < 1:
		return errors.New("-mem-scans and -mem-handles must be at least 1")
	}
	_, err := c.workloads()
	return err
}

// lastWorkload is the highest workload number.
const lastWorkload = 13

// workloads returns the set of workloads -only selects.
func (c *config) workloads() (map[int]bool, error) {
	sel := map[int]bool{}
	if strings.TrimSpace(c.Only) == "" {
		for i := 1; i <= lastWorkload; i++ {
			sel[i] = true
		}
		return sel, nil
	}
	for _, f := range strings.Split(c.Only, ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(f), "%d", &n); err != nil || n < 1 || n > lastWorkload {
			return nil, fmt.Errorf("-only %q: want workload numbers 1 to %d", c.Only, lastWorkload)
		}
		sel[n] = true
	}
	return sel, nil
}
