package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"scanlockfs/internal/testutil"
	"scanlockfs/mountcmd"
	"scanlockfs/tests/internal/soak"
)

// Two hosts (two mounts of one SOURCE with lock directories of their
// own) exclude each other only through etcd: a reader on host B waits
// for a writer on host A and gets the scan only after A closed.
func TestEtcdTwoHostsExclude(t *testing.T) {
	h := twoHosts(t, nil)
	src, a, b, view, e := h.src, h.a, h.b, h.view, h.etcd

	w := startClient(t, "writer")
	w.mustOpen("w", a.path("scanA/files.json"), "w")
	r := startClient(t, "reader")
	r.open("r", b.path("scanA/files.json"), "r")
	waitCluster(t, view, "scanA", "host B's reader queued", func(h, wt int) bool { return h == 1 && wt == 1 })
	// Host B's status view and `scanlockfs status --etcd` show host A's
	// writer, with its host name.
	host, _ := os.Hostname()
	info, err := os.ReadFile(b.path(".locks/scanA.info"))
	must(t, err)
	if !strings.Contains(string(info), `"where": "cluster"`) || !strings.Contains(string(info), `"hostname": "`+host+`"`) {
		t.Fatalf("host B's scanA.info does not show host A's writer from etcd:\n%s", info)
	}
	code, out, errOut := runCode(t, binScanlockfs, "status", "--json", "--etcd", strings.Join(e.Endpoints, ","), src, "scanA")
	if code != 0 || !strings.Contains(out, `"hostname": "`+host+`"`) || !strings.Contains(out, `"exclusive"`) {
		t.Fatalf("scanlockfs status --etcd: exit %d\n%s%s", code, out, errOut)
	}
	metrics, err := os.ReadFile(b.path(".locks/metrics"))
	must(t, err)
	for _, want := range []string{"scanlockfs_cluster_session_up 1\n", "scanlockfs_cluster_lease_renewals_total{result=\"ok\"}",
		"scanlockfs_cluster_lock_seconds_count 0\n"} {
		if !strings.Contains(string(metrics), want) {
			t.Fatalf("host B's metrics lack %q:\n%s", want, metrics)
		}
	}
	closed := w.close("w")
	if res := r.result("r"); res.kind != "ok" || res.at < closed {
		t.Fatalf("reader on host B: %+v; writer on host A closed at %d", res, closed)
	}
	r.close("r")
	waitCluster(t, view, "scanA", "the scan is free", func(h, wt int) bool { return h+wt == 0 })
	// Host B's reader waited for host A in etcd: one cluster hold, one wait.
	metrics, err = os.ReadFile(b.path(".locks/metrics"))
	must(t, err)
	if !strings.Contains(string(metrics), "scanlockfs_cluster_lock_seconds_count 1\n") || !strings.Contains(string(metrics), "scanlockfs_cluster_lock_waits_total 1\n") {
		t.Fatalf("host B's metrics after its reader's wait:\n%s", metrics)
	}
}

// Writers and readers through both hosts, plus `scanlockfs run --etcd` on
// each host, on three scans: the linearizability checker finds no hold
// that overlapped an exclusive one, no torn read and exact counters.
func TestEtcdMixedLoadTwoHosts(t *testing.T) {
	t.Parallel()
	e := testutil.StartEtcd(t, 1)
	src := scanDB(t)
	scans := []string{"scan_000", "scan_001", "scan_002"}
	must(t, soak.Prepare(src, scans))
	const timeout = 20 * time.Second
	fa, fb := etcdFlags(t, e), etcdFlags(t, e)
	a := mountT(t, src, append(fa, "--timeout", timeout.String())...)
	b := mountT(t, src, append(fb, "--timeout", timeout.String())...)
	worker := soakWorker(t)
	logDir := t.TempDir()
	var runs sync.Map // host -> number of run commands that succeeded
	cfg := soak.Config{
		Source: src, Mount: a.mnt, Mounts: []string{b.mnt}, Scans: scans, MountWorkers: 4,
		Duration: 8 * time.Second, Timeout: timeout, Seed: uint64(time.Now().UnixNano()), Hold: time.Millisecond,
		WorkerBin: worker, LogDir: logDir, Stderr: testWriter{t},
		Also: func(ctx context.Context, deadline time.Time) error {
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for h, flags := range map[string][]string{"A": fa, "B": fb} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n, err := etcdRunLoop(ctx, h, flags, src, scans, worker, logDir, deadline)
					runs.Store(h, n)
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	runSoak(t, cfg)
	for _, h := range []string{"A", "B"} {
		if n, _ := runs.Load(h); n == nil || n.(int) == 0 {
			t.Fatalf("no scanlockfs run on host %s completed", h)
		}
	}
}

// etcdRunLoop runs `scanlockfs run -x --etcd ...` on one host until the
// deadline; under the lock, a soak worker increments and reads the
// scan's counter on SOURCE directly, logging for the checker. It returns
// how many runs completed.
func etcdRunLoop(ctx context.Context, host string, flags []string, src string, scans []string, worker, logDir string, deadline time.Time) (int, error) {
	n := 0
	for i := 0; time.Now().Before(deadline); i++ {
		scan := scans[i%len(scans)]
		name := fmt.Sprintf("run%s%d", host, i)
		args := append([]string{"run", "-x", "-w", "20s"}, flags...)
		args = append(args, src, scan, "--", worker, "mount", "-root", src, "-scans", scan,
			"-duration", "30ms", "-write-ratio", "0.7", "-reentrant", "0", "-log", filepath.Join(logDir, name+".log"),
			"-proc", name, "-seed", fmt.Sprint(time.Now().UnixNano()))
		cmd := exec.CommandContext(ctx, binScanlockfs, args...)
		cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return n, fmt.Errorf("%s: scanlockfs run: %v: %s", name, err, out)
		}
		n++
	}
	return n, nil
}

// etcd down at start: mount, run and status say which endpoints did not
// answer and exit with ExitCluster; nothing is mounted.
func TestEtcdDownAtStart(t *testing.T) {
	t.Parallel()
	testutil.RequireEtcd(t)
	requireFUSE(t)
	src := scanDB(t, "scanA")
	mnt := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	ep := "http://127.0.0.1:1"
	for _, args := range [][]string{
		{"mount", "--etcd", ep, src, mnt},
		{"run", "--etcd", ep, "-s", src, "scanA", "--", "true"},
	} {
		start := time.Now()
		code, _, errOut := runCode(t, binScanlockfs, args...)
		if code != mountcmd.ExitCluster || !strings.Contains(errOut, ep) {
			t.Fatalf("scanlockfs %s with etcd down: exit %d, %s; want %d naming %s", args[0], code, errOut, mountcmd.ExitCluster, ep)
		}
		t.Logf("%s gave up after %v", args[0], time.Since(start).Round(time.Millisecond))
	}
	if isMounted(mnt) {
		t.Fatal("mounted without etcd")
	}
}
