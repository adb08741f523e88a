// Command soakworker is one process of the linearizability and soak
// scenario: for a fixed time it takes scan locks on a few scans, reads
// the scan's counter file under each lock, increments it under exclusive
// locks, and records every grant in its own checker log.
//
//	soakworker mount  -root MOUNTPOINT -scans a,b,c -duration 30s -log FILE -proc NAME [flags]
//	soakworker direct -root SOURCE     -scans a,b,c -duration 30s -log FILE -proc NAME [flags]
//
// In mount mode the lock is the one the mount takes for open(2): O_RDONLY
// for shared, O_RDWR for exclusive, on MOUNTPOINT/SCAN/counter. In direct
// mode the process takes the lock with lockmgr on SOURCE and then opens
// SOURCE/SCAN/counter itself; with -goroutines N it runs N independent
// owners in one process (one log each, FILE.gI), which exercises the
// manager's in-process sharing too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
	"scanlockfs/tests/internal/checker"
)

type config struct {
	mode       string
	root       string
	scans      []string
	duration   time.Duration
	logPath    string
	proc       string
	writeRatio float64
	holdMax    time.Duration
	gapMax     time.Duration
	reentrant  float64
	goroutines int
	seed       uint64
	timeout    time.Duration
	stale      bool
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "mount" && os.Args[1] != "direct") {
		fmt.Fprintln(os.Stderr, "usage: soakworker mount|direct -root DIR -scans a,b,c -duration D -log FILE -proc NAME [flags]")
		os.Exit(2)
	}
	cfg := config{mode: os.Args[1]}
	fs := flag.NewFlagSet("soakworker "+cfg.mode, flag.ExitOnError)
	scans := fs.String("scans", "scan0,scan1,scan2", "comma-separated scan ids")
	fs.StringVar(&cfg.root, "root", "", "mount point (mount) or SOURCE (direct)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to run")
	fs.StringVar(&cfg.logPath, "log", "", "checker log file to create")
	fs.StringVar(&cfg.proc, "proc", "", "process name in the log")
	fs.Float64Var(&cfg.writeRatio, "write-ratio", 0.4, "fraction of requests that are exclusive increments")
	fs.DurationVar(&cfg.holdMax, "hold", 300*time.Microsecond, "hold each lock for a random time up to this")
	fs.DurationVar(&cfg.gapMax, "gap", 200*time.Microsecond, "pause a random time up to this between requests")
	fs.Float64Var(&cfg.reentrant, "reentrant", 0.2, "mount: fraction of exclusive holds that also open another file of the scan")
	fs.IntVar(&cfg.goroutines, "goroutines", 1, "direct: independent owners in this process")
	fs.Uint64Var(&cfg.seed, "seed", uint64(os.Getpid()), "random seed")
	fs.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "direct: lock timeout")
	fs.BoolVar(&cfg.stale, "stale-cleanup", false, "direct: purge stale lock files at start (off: the workers start while others already lock)")
	_ = fs.Parse(os.Args[2:])
	cfg.scans = strings.Split(*scans, ",")
	if cfg.root == "" || cfg.logPath == "" || cfg.proc == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "soakworker: -root, -log and -proc are required")
		os.Exit(2)
	}
	ops, fails, err := run(cfg)
	fmt.Printf("ops %d fails %d\n", ops, fails)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soakworker:", err)
		os.Exit(1)
	}
}

func run(cfg config) (int, int, error) {
	var mgr *lockmgr.Manager
	n := 1
	if cfg.mode == "direct" {
		var err error
		mgr, err = lockmgr.New(cfg.root, lockmgr.WithTimeout(cfg.timeout), lockmgr.WithStaleCleanup(cfg.stale))
		if err != nil {
			return 0, 0, err
		}
		defer mgr.Close()
		n = max(cfg.goroutines, 1)
	}
	deadline := time.Now().Add(cfg.duration)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ops, fails int
	var errs []error
	for g := range n {
		w := &worker{cfg: cfg, mgr: mgr, rng: rand.New(rand.NewPCG(cfg.seed, uint64(g)))}
		path, proc := cfg.logPath, cfg.proc
		if n > 1 {
			path, proc = fmt.Sprintf("%s.g%d", path, g), fmt.Sprintf("%s.g%d", proc, g)
		}
		w.owner = lockmgr.Owner{User: lockmgr.UserName(), Key: fmt.Sprintf("soak:%d:%d", os.Getpid(), g), PID: os.Getpid()}
		log, err := checker.Create(path, proc)
		if err != nil {
			return 0, 0, err
		}
		w.log = log
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, f := w.loop(deadline)
			err := log.Close()
			mu.Lock()
			ops, fails = ops+o, fails+f
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ops, fails, errors.Join(errs...)
}

type worker struct {
	cfg   config
	mgr   *lockmgr.Manager
	owner lockmgr.Owner
	rng   *rand.Rand
	log   *checker.Log
	buf   [1 << 16]byte
}

func (w *worker) loop(deadline time.Time) (ops, fails int) {
	for seq := uint64(1); time.Now().Before(deadline); seq++ {
		scan := w.cfg.scans[w.rng.IntN(len(w.cfg.scans))]
		write := w.rng.Float64() < w.cfg.writeRatio
		if err := w.op(seq, scan, write); err != nil {
			fails++
			fmt.Fprintf(os.Stderr, "%s: %v\n", w.cfg.proc, err)
			time.Sleep(time.Millisecond)
			continue
		}
		ops++
		if w.cfg.gapMax > 0 {
			time.Sleep(time.Duration(w.rng.Int64N(int64(w.cfg.gapMax))))
		}
	}
	return ops, fails
}

// op takes one lock, reads (and for write increments) the counter, and
// releases. The log's begin is taken after the lock call returned and
// its end before the release, so they lie inside the real hold.
func (w *worker) op(seq uint64, scan string, write bool) error {
	mode, lmode, flags := checker.Shared, lockmgr.Shared, unix.O_RDONLY
	if write {
		mode, lmode, flags = checker.Exclusive, lockmgr.Exclusive, unix.O_RDWR
	}
	path := filepath.Join(w.cfg.root, scan, "counter")
	w.log.Want(seq, scan, mode, checker.Now())
	var lease *lockmgr.Lease
	if w.mgr != nil {
		var err error
		lease, err = w.mgr.Acquire(context.Background(), scan, lmode, w.owner)
		if err != nil {
			w.log.Fail(seq, scan, mode, checker.Now(), checker.ErrName(err))
			return fmt.Errorf("lock %s %s: %w", scan, mode, err)
		}
	}
	fd, err := openRetry(path, flags|unix.O_CLOEXEC)
	if err != nil {
		w.log.Fail(seq, scan, mode, checker.Now(), checker.ErrName(err))
		if lease != nil {
			_ = lease.Release()
		}
		return fmt.Errorf("open %s: %w", path, err)
	}
	w.log.Begin(seq, scan, mode, checker.Now())
	read, wrote, ioErr := w.readAndIncrement(fd, write)
	if ioErr == nil && write && w.mgr == nil && w.rng.Float64() < w.cfg.reentrant {
		// The exclusive holder opens another file of its scan: it must not
		// wait for itself.
		ioErr = reopen(filepath.Join(w.cfg.root, scan, "files.json"))
	}
	if w.cfg.holdMax > 0 {
		time.Sleep(time.Duration(w.rng.Int64N(int64(w.cfg.holdMax))))
	}
	w.log.End(seq, scan, mode, checker.Now(), read, wrote)
	closeErr := unix.Close(fd)
	var relErr error
	if lease != nil {
		relErr = lease.Release()
	}
	if err := errors.Join(ioErr, closeErr, relErr); err != nil {
		return fmt.Errorf("%s %s: %w", scan, mode, err)
	}
	return nil
}

// readAndIncrement reads the counter and, for a writer, writes the next
// value in two parts with a pause, so that a reader that is not excluded
// sees a torn file.
func (w *worker) readAndIncrement(fd int, write bool) (read, wrote int, err error) {
	k, err := unix.Pread(fd, w.buf[:], 0)
	if err != nil {
		return checker.None, checker.None, err
	}
	n, perr := checker.ParseCounter(w.buf[:k])
	if perr != nil {
		return checker.Torn, checker.None, nil
	}
	if !write {
		return n, checker.None, nil
	}
	next := checker.CounterContent(n + 1)
	half := len(next) / 2
	if err := unix.Ftruncate(fd, 0); err != nil {
		return n, checker.None, err
	}
	if _, err := unix.Pwrite(fd, next[:half], 0); err != nil {
		return n, checker.None, err
	}
	time.Sleep(20 * time.Microsecond)
	if _, err := unix.Pwrite(fd, next[half:], int64(half)); err != nil {
		return n, checker.None, err
	}
	return n, n + 1, nil
}

func reopen(path string) error {
	fd, err := openRetry(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return fmt.Errorf("reentrant open %s: %w", path, err)
	}
	return unix.Close(fd)
}

func openRetry(path string, flags int) (int, error) { return testutil.OpenRetry(path, flags, 0) }
