// Command soakrun is scripts/soak's driver: it mounts a fresh scan
// database with scanlockfs, runs the linearizability scenario (package
// soak) for the given time, checks the logs, checks that the daemon is
// back to its baseline (no lease, no waiter, no extra descriptor), unmounts
// and prints the figures. It exits 1 on any violation, failed request,
// leak or daemon error.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"scanlockfs/internal/testutil"
	"scanlockfs/tests/internal/leakcheck"
	"scanlockfs/tests/internal/soak"
)

func main() {
	bin := flag.String("scanlockfs", "", "the scanlockfs binary")
	worker := flag.String("worker", "", "the soakworker binary")
	peer := flag.String("plantdb-peer", "", "internal/testpeer/plantdb_peer.py (for -plantdb)")
	duration := flag.Duration("duration", 10*time.Minute, "how long the workers run")
	mountWorkers := flag.Int("mount-workers", 8, "processes using the mount")
	directWorkers := flag.Int("direct-workers", 4, "processes using lockmgr directly")
	goroutines := flag.Int("direct-goroutines", 2, "independent owners per direct process")
	plantdb := flag.Int("plantdb", 1, "plantdb-protocol peers (exclusive)")
	nscans := flag.Int("scans", 3, "number of scans")
	writeRatio := flag.Float64("write-ratio", 0.4, "fraction of exclusive increments")
	hold := flag.Duration("hold", 300*time.Microsecond, "maximum hold time")
	timeout := flag.Duration("timeout", 2*time.Minute, "lock timeout of the mount and of the direct workers (a request that waits longer fails the soak)")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "random seed")
	dir := flag.String("dir", "", "work directory (default: a new temporary one, removed unless -keep)")
	keep := flag.Bool("keep", false, "keep the work directory (logs, SOURCE)")
	passthrough := flag.Bool("passthrough", true, "let the kernel pass reads and writes through (false: through the daemon)")
	flag.Parse()
	if *bin == "" || *worker == "" || (*plantdb > 0 && *peer == "") {
		fmt.Fprintln(os.Stderr, "soakrun: -scanlockfs, -worker (and -plantdb-peer with -plantdb) are required")
		os.Exit(2)
	}
	code, err := run(*bin, *worker, *peer, *dir, *keep, *passthrough, soak.Config{
		MountWorkers: *mountWorkers, DirectWorkers: *directWorkers, DirectGoroutines: *goroutines,
		PlantdbPeers: *plantdb, Duration: *duration, WriteRatio: *writeRatio, Hold: *hold, Timeout: *timeout, Seed: *seed,
		Scans: scanNames(*nscans),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
	}
	os.Exit(code)
}

func scanNames(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("scan_%03d", i)
	}
	return s
}

func run(bin, worker, peer, dir string, keep, passthrough bool, cfg soak.Config) (int, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "scanlockfs-soak-")
		if err != nil {
			return 1, err
		}
		dir = d
		if !keep {
			defer os.RemoveAll(dir)
		}
	}
	src, mnt, logs := filepath.Join(dir, "db"), filepath.Join(dir, "mnt"), filepath.Join(dir, "logs")
	for _, d := range []string{src, mnt, logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 1, err
		}
	}
	if err := soak.Prepare(src, cfg.Scans); err != nil {
		return 1, err
	}
	args := []string{"mount", "--timeout", cfg.Timeout.String(), "--log-level", "info"}
	if !passthrough {
		args = append(args, "--no-passthrough")
	}
	daemon := exec.Command(bin, append(args, src, mnt)...)
	var stdout, stderr lockedBuffer
	daemon.Stdout, daemon.Stderr = &stdout, &stderr
	if err := daemon.Start(); err != nil {
		return 1, err
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	stop := func() {
		_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = daemon.Process.Kill()
		}
	}
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stdout.String(), "scanlockfs: mounted"); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-exited:
			return 1, fmt.Errorf("scanlockfs mount exited: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return 1, fmt.Errorf("scanlockfs mount not ready after 30s\n%s", stderr.String())
		}
	}
	for _, s := range cfg.Scans {
		if _, err := os.ReadFile(filepath.Join(mnt, s, "files.json")); err != nil {
			stop()
			return 1, err
		}
	}
	pid := daemon.Process.Pid
	lockDir := filepath.Join(src, ".locks")
	metrics := filepath.Join(mnt, ".locks", "metrics")
	base, err := leakcheck.Take(pid, lockDir, metrics)
	if err != nil {
		stop()
		return 1, err
	}

	fmt.Printf("soak: %d mount + %d direct (x%d owners) + %d plantdb processes on %d scans for %v (seed %d)\n",
		cfg.MountWorkers, cfg.DirectWorkers, cfg.DirectGoroutines, cfg.PlantdbPeers, len(cfg.Scans), cfg.Duration, cfg.Seed)
	cfg.Source, cfg.Mount, cfg.LogDir, cfg.WorkerBin, cfg.PlantdbPeer, cfg.Stderr = src, mnt, logs, worker, peer, os.Stderr
	start := time.Now()
	report, runErr := soak.Run(context.Background(), cfg)
	elapsed := time.Since(start)

	var leaks []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		cur, err := leakcheck.Take(pid, lockDir, metrics)
		if err != nil {
			leaks = []string{err.Error()}
			break
		}
		if leaks = leakcheck.Leaks(base, cur); len(leaks) == 0 || time.Now().After(deadline) {
			break
		}
	}

	unmountErr := unmount(mnt)
	var daemonErr error
	select {
	case daemonErr = <-exited:
	case <-time.After(30 * time.Second):
		_ = daemon.Process.Kill()
		daemonErr = fmt.Errorf("did not exit after the unmount")
	}
	log := stderr.String()
	stats := ""
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "every scan lock released") {
			stats = l
		}
	}

	code := 0
	if report != nil {
		fmt.Print(report.Summary())
		fmt.Printf("throughput: %.0f operations/s\n", float64(report.Ops)/elapsed.Seconds())
		if report.ViolationCount() > 0 || report.FailureCount() > 0 || report.Ops == 0 {
			code = 1
		}
	}
	if len(leaks) > 0 {
		fmt.Printf("leaks: %d\n  %s\n", len(leaks), strings.Join(leaks, "\n  "))
		code = 1
	} else {
		fmt.Println("leaks: none (no flock, no lease or waiter, descriptors back to the baseline)")
	}
	fmt.Printf("daemon: %s\n", strings.TrimSpace(stats))
	problems := []string{}
	if runErr != nil {
		problems = append(problems, "workers: "+runErr.Error())
	}
	if unmountErr != nil {
		problems = append(problems, "unmount: "+unmountErr.Error())
	}
	if daemonErr != nil {
		problems = append(problems, fmt.Sprintf("daemon exit: %v", daemonErr))
	}
	if !strings.Contains(stats, " holders_left=0") || !strings.Contains(stats, " waiters_left=0") {
		problems = append(problems, "daemon's final statistics missing or with leases left")
	}
	for _, bad := range []string{"panic", "level=error", "level=fatal", "DATA RACE"} {
		if strings.Contains(log, bad) {
			problems = append(problems, "daemon log has "+bad)
		}
	}
	if len(problems) > 0 {
		fmt.Printf("problems:\n  %s\ndaemon log:\n%s\n", strings.Join(problems, "\n  "), tail(log, 40))
		code = 1
	}
	if keep {
		fmt.Println("work directory:", dir)
	}
	if code == 0 {
		fmt.Println("soak: PASS")
	} else {
		fmt.Println("soak: FAIL")
	}
	return code, nil
}

// unmount unmounts mnt, retrying while busy: the kernel releases files
// asynchronously after close(2).
func unmount(mnt string) error {
	var out []byte
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if out, err = exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err == nil {
			return nil
		}
	}
	_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
	return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lockedBuffer collects the daemon's output while it runs.
type lockedBuffer = testutil.Buffer
