package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"scanlockfs/tests/internal/checker"
	"scanlockfs/tests/internal/soak"
)

var (
	soakWorkerOnce sync.Once
	soakWorkerPath string
	soakWorkerErr  error
)

// soakWorker builds the soak worker next to the other test binaries
// (TestMain removes that directory).
func soakWorker(t *testing.T) string {
	t.Helper()
	soakWorkerOnce.Do(func() {
		soakWorkerPath = filepath.Join(filepath.Dir(binScanlockfs), "soakworker")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", soakWorkerPath, "scanlockfs/tests/internal/soakworker")
		cmd.Dir = filepath.Dir(filepath.Dir(file))
		out, err := cmd.CombinedOutput()
		if err != nil {
			soakWorkerErr = fmt.Errorf("building soakworker: %v\n%s", err, out)
		}
	})
	if soakWorkerErr != nil {
		t.Fatal(soakWorkerErr)
	}
	return soakWorkerPath
}

// plantdbPeer is the plantdb-protocol peer of the tests and the benchmark.
func plantdbPeer(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(filepath.Dir(file)), "internal", "testpeer", "plantdb_peer.py")
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Linearizability of the scan locks under load: 8 processes reading and
// writing through the mount with open(2), 4 processes using lockmgr
// directly with two independent owners each, and a plantdb-protocol peer,
// on 3 scans for 30 seconds. Each holder logs its grants on
// CLOCK_MONOTONIC in its own file; the checker proves that no exclusive
// hold overlapped any other hold of its scan, that every grant was
// released, that every holder read what the last writer before it wrote,
// and that the counter files are exact. Then the daemon must be back to
// its baseline. scripts/soak runs the same for any duration.
func TestLinearizabilityUnderLoad(t *testing.T) {
	t.Parallel()
	duration := 30 * time.Second
	if testing.Short() {
		duration = 5 * time.Second
	}
	worker := soakWorker(t)
	src := scanDB(t)
	scans := []string{"scan_000", "scan_001", "scan_002"}
	must(t, soak.Prepare(src, scans))
	// A request that waits this long is a liveness failure, not load.
	const timeout = 20 * time.Second
	d := mountT(t, src, "--timeout", timeout.String())
	base := d.leakBaseline(t)

	cfg := soak.Config{
		Source: src, Mount: d.mnt, Scans: scans,
		MountWorkers: 8, DirectWorkers: 4, DirectGoroutines: 2, PlantdbPeers: 1,
		Duration: duration, Timeout: timeout, Seed: uint64(time.Now().UnixNano()),
		WorkerBin: worker, PlantdbPeer: plantdbPeer(t), LogDir: t.TempDir(), Stderr: testWriter{t},
	}
	runSoak(t, cfg)
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}

// runSoak runs cfg and fails the test if a worker failed, the checker
// found a violation or a failed request, a worker (each owner of the
// direct workers, each plantdb peer) logged no grant, or the load had no
// mix of modes.
func runSoak(t *testing.T, cfg soak.Config) *checker.Report {
	t.Helper()
	r, err := soak.Run(context.Background(), cfg)
	if r != nil {
		t.Logf("seed %d\n%s", cfg.Seed, r.Summary())
	}
	if err != nil {
		t.Fatalf("workers: %v", err)
	}
	if n := r.ViolationCount(); n > 0 {
		t.Fatalf("%d violations of the lock rules (seed %d):\n%s", n, cfg.Seed, r.Summary())
	}
	if n := r.FailureCount(); n > 0 {
		t.Fatalf("%d lock requests failed (seed %d):\n%s", n, cfg.Seed, r.Summary())
	}
	// cfg.Also may add processes of its own.
	if want := cfg.MountWorkers + cfg.DirectWorkers*max(cfg.DirectGoroutines, 1) + cfg.PlantdbPeers + cfg.PlantdbMountPeers; r.Processes < want {
		t.Fatalf("%d processes logged grants, want %d", r.Processes, want)
	}
	if r.Shared == 0 || r.Exclusive == 0 || r.Increments == 0 {
		t.Fatalf("the load had no mix of modes: %s", r.Summary())
	}
	return r
}

// testWriter sends worker messages to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
