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

	"scanlockfs/tests/internal/checker"
)

// Config describes one run.
type Config struct {
	Source string // the scan database
	Mount  string // where it is mounted with scanlockfs
	Scans  []string

	MountWorkers     int // processes using the mount
	DirectWorkers    int // processes using lockmgr on Source
	DirectGoroutines int // independent owners per direct process (default 1)
	PlantdbPeers     int // plantdb-protocol peers (exclusive), run one after another on random scans

	Duration   time.Duration
	WriteRatio float64       // fraction of exclusive increments (default 0.4)
	Hold       time.Duration // maximum hold time (default 300µs)
	Timeout    time.Duration // direct workers' lock timeout (default 2 minutes)
	Seed       uint64

	WorkerBin   string // the soakworker binary
	PlantdbPeer string // internal/testpeer/plantdb_peer.py, for PlantdbPeers
	LogDir      string // an existing directory for the logs
	Stderr      io.Writer
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
	initial, err := Initial(cfg.Source, cfg.Scans)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+cfg.Timeout+time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	scans := strings.Join(cfg.Scans, ",")
	start := func(name string, args ...string) {
		cmd := exec.CommandContext(ctx, cfg.WorkerBin, args...)
		// Go's preemption signals would interrupt the FUSE requests the
		// worker waits in; C programs would see EINTR, the worker retries.
		cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
		var stderr tail
		cmd.Stderr = io.MultiWriter(&stderr, prefixWriter(cfg.Stderr, name))
		if err := cmd.Start(); err != nil {
			fail(fmt.Errorf("%s: %w", name, err))
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cmd.Wait(); err != nil {
				fail(fmt.Errorf("%s: %v: %s", name, err, stderr.String()))
			}
		}()
	}
	common := func(i int, mode, root string) []string {
		name := fmt.Sprintf("%s%d", mode, i)
		return []string{mode, "-root", root, "-scans", scans, "-duration", cfg.Duration.String(),
			"-log", filepath.Join(cfg.LogDir, name+".log"), "-proc", name,
			"-write-ratio", strconv.FormatFloat(cfg.WriteRatio, 'f', -1, 64), "-hold", cfg.Hold.String(), "-timeout", cfg.Timeout.String(),
			"-seed", strconv.FormatUint(cfg.Seed*1000+uint64(i)+map[string]uint64{"mount": 0, "direct": 500}[mode], 10)}
	}
	for i := range cfg.MountWorkers {
		start(fmt.Sprintf("mount%d", i), common(i, "mount", cfg.Mount)...)
	}
	for i := range cfg.DirectWorkers {
		start(fmt.Sprintf("direct%d", i), append(common(i, "direct", cfg.Source), "-goroutines", strconv.Itoa(cfg.DirectGoroutines))...)
	}
	deadline := time.Now().Add(cfg.Duration)
	for i := range cfg.PlantdbPeers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runPlantdb(ctx, cfg, i, deadline); err != nil {
				fail(fmt.Errorf("plantdb%d: %w", i, err))
			}
		}()
	}
	wg.Wait()

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
	return r, errors.Join(errs...)
}

// runPlantdb runs plantdb-protocol peers one after the other until the
// deadline, each doing a few exclusive holds on a random scan, and turns
// their reports into a checker log. plantdb peers only take exclusive
// locks here: a plantdb reader unlinks the lock file while other readers
// may still hold it, which lockmgr documents as outside what it can
// guarantee.
func runPlantdb(ctx context.Context, cfg Config, i int, deadline time.Time) error {
	name := fmt.Sprintf("plantdb%d", i)
	log, err := checker.Create(filepath.Join(cfg.LogDir, name+".log"), name)
	if err != nil {
		return err
	}
	defer log.Close()
	rng := rand.New(rand.NewPCG(cfg.Seed, 900+uint64(i)))
	seq := uint64(0)
	for time.Now().Before(deadline) {
		scan := cfg.Scans[rng.IntN(len(cfg.Scans))]
		cmd := exec.CommandContext(ctx, "python3", cfg.PlantdbPeer, "intervals", cfg.Source, scan,
			"--mode", "exclusive", "-n", "10", "--hold-ms", "0.2", "--gap-ms", "1", "--retry-sleep", "0.002",
			"--timeout", strconv.FormatFloat(cfg.Timeout.Seconds(), 'f', -1, 64), "--user", name)
		var stderr tail
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

// tail keeps the last few KiB written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
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
