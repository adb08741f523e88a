// Package soak runs the linearizability scenario: many processes take
// the locks of a few scans at once, some through a scanlockfs mount
// (open(2) for reading and writing), some directly with lockmgr on
// SOURCE, optionally plantdb-protocol peers, each logging its grants in
// its own checker log; then the logs and the counter files are checked.
// The end-to-end test runs it for about 30 seconds, scripts/soak for as
// long as asked.
package soak

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"scanlockfs/internal/testutil"
	"scanlockfs/tests/internal/checker"
)

// Config describes one run.
type Config struct {
	Source string // the scan database
	Mount  string // where it is mounted with scanlockfs
	// Mounts, if set, are further mounts of Source (other "hosts"): the
	// mount workers are spread over Mount and Mounts.
	Mounts []string
	Scans  []string

	MountWorkers     int // processes using the mount
	DirectWorkers    int // processes using lockmgr on Source
	DirectGoroutines int // independent owners per direct process (default 1)
	PlantdbPeers     int // plantdb-protocol peers (exclusive), run one after another on random scans
	// PlantdbMountPeers are the same through the mount (Mount/.locks, with
	// plantdb's constructor steps), numbered after PlantdbPeers.
	PlantdbMountPeers int

	Duration   time.Duration
	WriteRatio float64       // fraction of exclusive increments (default 0.4)
	Hold       time.Duration // maximum hold time (default 300µs)
	Timeout    time.Duration // direct workers' lock timeout (default 2 minutes)
	Seed       uint64

	WorkerBin   string // the soakworker binary
	PlantdbPeer string // internal/testpeer/plantdb_peer.py, for PlantdbPeers
	LogDir      string // an existing directory for the logs
	Stderr      io.Writer
	// Also, if set, runs beside the workers until the deadline (more
	// lock users, writing checker logs of their own in LogDir); the logs
	// are checked once it has returned.
	Also func(ctx context.Context, deadline time.Time) error
}

// Prepare creates the scans in source, each with a counter file at 0 and
// a files.json.
func Prepare(source string, scans []string) error {
	for _, s := range scans {
		dir := filepath.Join(source, s)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "counter"), checker.CounterContent(0), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "files.json"), []byte("{}\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Initial reads the counter files of scans in source before a run.
func Initial(source string, scans []string) (map[string]int, error) {
	initial := map[string]int{}
	for _, s := range scans {
		b, err := os.ReadFile(filepath.Join(source, s, "counter"))
		if err != nil {
			return nil, err
		}
		if initial[s], err = checker.ParseCounter(b); err != nil {
			return nil, fmt.Errorf("counter of %s before the run: %w", s, err)
		}
	}
	return initial, nil
}

// Counters reads the counter files of scans in source after a run, for
// the checker, with their values before it.
func Counters(source string, scans []string, initial map[string]int) map[string]checker.Counter {
	counters := map[string]checker.Counter{}
	for _, s := range scans {
		c := checker.Counter{Initial: initial[s]}
		b, err := os.ReadFile(filepath.Join(source, s, "counter"))
		if err == nil {
			c.Final, err = checker.ParseCounter(b)
		}
		c.FinalErr = err
		counters[s] = c
	}
	return counters
}

// Run runs the workers for cfg.Duration, waits for them and checks their
// logs against the counter files. The error reports workers that failed
// to run; violations are in the report.
func Run(ctx context.Context, cfg Config) (*checker.Report, error) {
	cfg.defaults()
	initial, err := Initial(cfg.Source, cfg.Scans)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+cfg.Timeout+time.Minute)
	defer cancel()
	w := &workers{ctx: ctx, cfg: cfg}
	mounts := append([]string{cfg.Mount}, cfg.Mounts...)
	for i := range cfg.MountWorkers {
		w.start(fmt.Sprintf("mount%d", i), w.args(i, "mount", mounts[i%len(mounts)])...)
	}
	for i := range cfg.DirectWorkers {
		w.start(fmt.Sprintf("direct%d", i), append(w.args(i, "direct", cfg.Source), "-goroutines", strconv.Itoa(cfg.DirectGoroutines))...)
	}
	deadline := time.Now().Add(cfg.Duration)
	if cfg.Also != nil {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			if err := cfg.Also(ctx, deadline); err != nil {
				w.fail(err)
			}
		}()
	}
	for i := range cfg.PlantdbPeers + cfg.PlantdbMountPeers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			if err := runPlantdb(ctx, cfg, i, deadline); err != nil {
				w.fail(fmt.Errorf("plantdb%d: %w", i, err))
			}
		}()
	}
	w.wg.Wait()
	return check(cfg, initial), errors.Join(w.errs...)
}

// defaults fills in what Config leaves at zero.
func (cfg *Config) defaults() {
	if cfg.WriteRatio == 0 {
		cfg.WriteRatio = 0.4
	}
	if cfg.Hold == 0 {
		cfg.Hold = 300 * time.Microsecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.DirectGoroutines == 0 {
		cfg.DirectGoroutines = 1
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
}

// workers are the soak's worker processes and what went wrong with them.
type workers struct {
	ctx  context.Context
	cfg  Config
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func (w *workers) fail(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, err)
	w.mu.Unlock()
}

// start runs the worker binary with args as name.
func (w *workers) start(name string, args ...string) {
	cmd := exec.CommandContext(w.ctx, w.cfg.WorkerBin, args...)
	// Go's preemption signals would interrupt the FUSE requests the
	// worker waits in; C programs would see EINTR, the worker retries.
	cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
	var stderr testutil.Tail
	cmd.Stderr = io.MultiWriter(&stderr, prefixWriter(w.cfg.Stderr, name))
	if err := cmd.Start(); err != nil {
		w.fail(fmt.Errorf("%s: %w", name, err))
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := cmd.Wait(); err != nil {
			w.fail(fmt.Errorf("%s: %v: %s", name, err, stderr.String()))
		}
	}()
}

// args are the arguments of worker i of mode (mount or direct) on root.
func (w *workers) args(i int, mode, root string) []string {
	cfg := w.cfg
	name := fmt.Sprintf("%s%d", mode, i)
	return []string{mode, "-root", root, "-scans", strings.Join(cfg.Scans, ","), "-duration", cfg.Duration.String(),
		"-log", filepath.Join(cfg.LogDir, name+".log"), "-proc", name,
		"-write-ratio", strconv.FormatFloat(cfg.WriteRatio, 'f', -1, 64), "-hold", cfg.Hold.String(), "-timeout", cfg.Timeout.String(),
		"-seed", strconv.FormatUint(cfg.Seed*1000+uint64(i)+map[string]uint64{"mount": 0, "direct": 500}[mode], 10)}
}

// check checks the workers' logs and the counters against their values
// before the run.
func check(cfg Config, initial map[string]int) *checker.Report {
	logs, _ := filepath.Glob(filepath.Join(cfg.LogDir, "*.log*"))
	var events []checker.Event
	var parseErrs []error
	for _, p := range logs {
		evs, perrs := checker.ParseFile(p)
		events = append(events, evs...)
		parseErrs = append(parseErrs, perrs...)
	}
	r := checker.Check(events, Counters(cfg.Source, cfg.Scans, initial))
	for _, e := range parseErrs {
		r.ByKind[checker.Malformed]++
		r.Violations = append(r.Violations, checker.Violation{Kind: checker.Malformed, Detail: e.Error()})
	}
	return r
}

// runPlantdb runs plantdb-protocol peers one after the other until the
// deadline, each doing a few exclusive holds on a random scan, and turns
// their reports into a checker log. plantdb peers only take exclusive
// locks here: a plantdb reader unlinks the lock file while other readers
// may still hold it, which lockmgr documents as outside what it can
// guarantee.
func runPlantdb(ctx context.Context, cfg Config, i int, deadline time.Time) error {
	name, root, extra := fmt.Sprintf("plantdb%d", i), cfg.Source, []string(nil)
	if i >= cfg.PlantdbPeers {
		name, root, extra = fmt.Sprintf("plantdbmnt%d", i), cfg.Mount, []string{"--constructor"}
	}
	log, err := checker.Create(filepath.Join(cfg.LogDir, name+".log"), name)
	if err != nil {
		return err
	}
	defer log.Close()
	rng := rand.New(rand.NewPCG(cfg.Seed, 900+uint64(i)))
	seq := uint64(0)
	for time.Now().Before(deadline) {
		scan := cfg.Scans[rng.IntN(len(cfg.Scans))]
		args := append([]string{cfg.PlantdbPeer, "intervals", root, scan,
			"--mode", "exclusive", "-n", "10", "--hold-ms", "0.2", "--gap-ms", "1", "--retry-sleep", "0.002",
			"--timeout", strconv.FormatFloat(cfg.Timeout.Seconds(), 'f', -1, 64), "--user", name}, extra...)
		cmd := exec.CommandContext(ctx, "python3", args...)
		var stderr testutil.Tail
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 4 || f[0] != "interval" {
				continue
			}
			b, err1 := strconv.ParseInt(f[2], 10, 64)
			e, err2 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("bad peer line %q", sc.Text())
			}
			seq++
			log.Begin(seq, scan, f[1], b)
			log.End(seq, scan, f[1], e, checker.None, checker.None)
		}
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("%v: %s", err, stderr.String())
		}
	}
	return nil
}

// prefixWriter prefixes every line written to w with name.
func prefixWriter(w io.Writer, name string) io.Writer {
	if w == io.Discard {
		return w
	}
	return &prefixed{w: w, name: name}
}

type prefixed struct {
	mu      sync.Mutex
	w       io.Writer
	name    string
	partial []byte
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s: %s\n", p.name, p.partial[:i])
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}
