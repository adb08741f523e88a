package tests

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"scanlockfs/tests/internal/checker"
	"scanlockfs/tests/internal/soak"
)

// plantdbRuns is the number of rounds of the mixed load: a few in the
// suite, 20 or more from scripts/soak (-plantdb-runs).
var plantdbRuns = flag.Int("plantdb-runs", 3, "rounds of TestMixedLoadWithPlantdbNeverOverlapsOurHolders")

// Mixed load with plantdb's protocol, unlink on release included: on two
// scans, plantdb-protocol writers and readers (several per scan, so that
// plantdb races itself), processes reading and writing through the
// mount, a lockmgr user and `scanlockfs run --shared/--exclusive`, in
// short rounds on one mount. Every holder logs its grants; the checker
// must find no overlap involving a scanlockfs holder. Overlaps between
// plantdb processes are plantdb's own bug (its release unlinks a lock
// file another plantdb process may hold): they are counted and logged,
// not failed.
func TestMixedLoadWithPlantdbNeverOverlapsOurHolders(t *testing.T) {
	t.Parallel()
	runs := *plantdbRuns
	per := 700 * time.Millisecond
	worker := soakWorker(t)
	peer := plantdbPeer(t)
	src := scanDB(t)
	scans := []string{"scan_000", "scan_001"}
	must(t, soak.Prepare(src, scans))
	const timeout = 20 * time.Second
	d := mountT(t, src, "--timeout", timeout.String())

	var plantdbOnly, holds int
	for run := range runs {
		logDir := t.TempDir()
		r, pp := mixedRun(t, soak.Config{
			Source: src, Mount: d.mnt, Scans: scans, MountWorkers: 4, DirectWorkers: 1, WriteRatio: 0.5,
			Duration: per, Timeout: timeout, Seed: uint64(time.Now().UnixNano()),
			WorkerBin: worker, PlantdbPeer: peer, LogDir: logDir, Stderr: testWriter{t},
		})
		ours := r.ByKind[checker.Overlap] - pp.ByKind[checker.Overlap]
		others := r.ViolationCount() - r.ByKind[checker.Overlap]
		if ours > 0 || others > 0 {
			dumpStderr(t, logDir)
			t.Fatalf("round %d: %d overlaps involving a scanlockfs holder, %d other violations:\n%s", run, ours, others, r.Summary())
		}
		t.Logf("round %d: %d plantdb-vs-plantdb overlaps; %s", run, pp.ByKind[checker.Overlap], r.Summary())
		plantdbOnly += pp.ByKind[checker.Overlap]
		holds += r.Ops
	}
	t.Logf("%d rounds, %d holds: 0 overlaps involving a scanlockfs holder; %d plantdb-vs-plantdb overlaps (plantdb's own race)",
		runs, holds, plantdbOnly)
}

// mixedRun runs one round of the mixed load and checks the logs: the
// report of all holders and the one of the plantdb peers alone.
func mixedRun(t *testing.T, cfg soak.Config) (all, plantdb *checker.Report) {
	t.Helper()
	initial, err := soak.Initial(cfg.Source, cfg.Scans)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+cfg.Timeout+time.Minute)
	defer cancel()
	deadline := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	spawn := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- err
			}
		}()
	}
	// A plantdb writer and two plantdb readers on each scan.
	for i, mode := range []string{"exclusive", "shared", "shared"} {
		for j, scan := range cfg.Scans {
			name := fmt.Sprintf("plantdb-%s%d-%d", mode, i, j)
			spawn(func() error { return plantdbLoop(ctx, cfg, name, scan, mode, deadline) })
		}
	}
	for i, mode := range []string{"--shared", "--exclusive"} {
		name := fmt.Sprintf("run%s%d", mode, i)
		spawn(func() error { return runHoldLoop(ctx, cfg, name, cfg.Scans[i%len(cfg.Scans)], mode, deadline) })
	}
	spawn(func() error {
		_, err := soak.Run(ctx, cfg) // its own report is taken while the others still run
		return err
	})
	wg.Wait()
	close(errs)
	var failed []error
	for err := range errs {
		failed = append(failed, err)
	}
	if len(failed) > 0 {
		t.Fatalf("workers: %v", errors.Join(failed...))
	}

	logs, err := filepath.Glob(filepath.Join(cfg.LogDir, "*.log"))
	must(t, err)
	var events, theirs []checker.Event
	for _, p := range logs {
		evs, perrs := checker.ParseFile(p)
		if len(perrs) > 0 {
			t.Fatalf("%s: %v", p, errors.Join(perrs...))
		}
		events = append(events, evs...)
		if strings.HasPrefix(filepath.Base(p), "plantdb-") {
			theirs = append(theirs, evs...)
		}
	}
	return checker.Check(events, soak.Counters(cfg.Source, cfg.Scans, initial)), checker.Check(theirs, nil)
}

// plantdbLoop runs plantdb-protocol peers on scan until the deadline and
// logs their holds. They try every 20 ms rather than plantdb's 100 ms, so
// that short runs see many races; the protocol is plantdb's otherwise.
func plantdbLoop(ctx context.Context, cfg soak.Config, name, scan, mode string, deadline time.Time) error {
	log, err := checker.Create(filepath.Join(cfg.LogDir, name+".log"), name)
	if err != nil {
		return err
	}
	defer log.Close()
	seq := uint64(0)
	for time.Now().Before(deadline) {
		cmd := exec.CommandContext(ctx, "python3", cfg.PlantdbPeer, "intervals", cfg.Source, scan,
			"--mode", mode, "-n", "3", "--hold-ms", "1", "--gap-ms", "1", "--retry-sleep", "0.02",
			"--timeout", strconv.FormatFloat(cfg.Timeout.Seconds(), 'f', -1, 64), "--user", name)
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for line := range strings.Lines(string(out)) {
			f := strings.Fields(line)
			if len(f) != 4 || f[0] != "interval" {
				continue
			}
			b, err1 := strconv.ParseInt(f[2], 10, 64)
			e, err2 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("%s: bad peer line %q", name, line)
			}
			seq++
			log.Begin(seq, scan, f[1], b)
			log.End(seq, scan, f[1], e, checker.None, checker.None)
		}
	}
	return nil
}

// holdProgram prints CLOCK_MONOTONIC at the start and at the end of a
// short hold: run under `scanlockfs run`, it lies inside the lock.
const holdProgram = `import time; print(time.monotonic_ns(), flush=True); time.sleep(0.001); print(time.monotonic_ns())`

// runHoldLoop runs `scanlockfs run MODE SOURCE scan -- python3 -c
// holdProgram` until the deadline and logs the holds.
func runHoldLoop(ctx context.Context, cfg soak.Config, name, scan, flag string, deadline time.Time) error {
	log, err := checker.Create(filepath.Join(cfg.LogDir, name+".log"), name)
	if err != nil {
		return err
	}
	defer log.Close()
	mode := strings.TrimPrefix(flag, "--")
	seq := uint64(0)
	for time.Now().Before(deadline) {
		seq++
		log.Want(seq, scan, mode, checker.Now())
		cmd := exec.CommandContext(ctx, binScanlockfs, "run", flag, "--timeout", cfg.Timeout.String(), cfg.Source, scan,
			"--", "python3", "-c", holdProgram)
		// Its warnings (a lost lock file) are shown if the round fails.
		ef, err := os.Create(filepath.Join(cfg.LogDir, fmt.Sprintf("%s-%d.stderr", name, seq)))
		if err != nil {
			return err
		}
		cmd.Stderr = ef
		out, err := cmd.Output()
		ef.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		var ts []int64
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			n, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
			if err != nil {
				return fmt.Errorf("%s: bad output %q", name, out)
			}
			ts = append(ts, n)
		}
		if len(ts) != 2 {
			return fmt.Errorf("%s: bad output %q", name, out)
		}
		log.Begin(seq, scan, mode, ts[0])
		log.End(seq, scan, mode, ts[1], checker.None, checker.None)
	}
	return nil
}

// dumpStderr logs what the `scanlockfs run` processes of a round said.
func dumpStderr(t *testing.T, dir string) {
	files, err := filepath.Glob(filepath.Join(dir, "*.stderr"))
	must(t, err)
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && len(b) > 0 {
			t.Logf("%s:\n%s", filepath.Base(f), b)
		}
	}
}
