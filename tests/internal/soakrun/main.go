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
	"scanlockfs/tests/internal/checker"
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
	d, err := startDaemon(bin, src, mnt, cfg, passthrough)
	if err != nil {
		return 1, err
	}
	pid := d.cmd.Process.Pid
	lockDir := filepath.Join(src, ".locks")
	metrics := filepath.Join(mnt, ".locks", "metrics")
	base, err := leakcheck.Take(pid, lockDir, metrics)
	if err != nil {
		d.stop()
		return 1, err
	}

	fmt.Printf("soak: %d mount + %d direct (x%d owners) + %d plantdb processes on %d scans for %v (seed %d)\n",
		cfg.MountWorkers, cfg.DirectWorkers, cfg.DirectGoroutines, cfg.PlantdbPeers, len(cfg.Scans), cfg.Duration, cfg.Seed)
	cfg.Source, cfg.Mount, cfg.LogDir, cfg.WorkerBin, cfg.PlantdbPeer, cfg.Stderr = src, mnt, logs, worker, peer, os.Stderr
	start := time.Now()
	var o outcome
	o.report, o.runErr = soak.Run(context.Background(), cfg)
	o.elapsed = time.Since(start)
	o.leaks = settledLeaks(pid, lockDir, metrics, base)
	o.unmountErr, o.daemonErr = d.finish()
	o.log = d.stderr.String()

	code := o.print()
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

// daemon is the scanlockfs mount under test.
type daemon struct {
	cmd            *exec.Cmd
	mnt            string
	stdout, stderr testutil.Buffer
	exited         chan error
}

// startDaemon mounts src on mnt and returns once the mount answers, the
// scans' files.json read through it.
func startDaemon(bin, src, mnt string, cfg soak.Config, passthrough bool) (*daemon, error) {
	args := []string{"mount", "--timeout", cfg.Timeout.String(), "--log-level", "info"}
	if !passthrough {
		args = append(args, "--no-passthrough")
	}
	d := &daemon{cmd: exec.Command(bin, append(args, src, mnt)...), mnt: mnt, exited: make(chan error, 1)}
	d.cmd.Stdout, d.cmd.Stderr = &d.stdout, &d.stderr
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { d.exited <- d.cmd.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(d.stdout.String(), "scanlockfs: mounted"); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-d.exited:
			return nil, fmt.Errorf("scanlockfs mount exited: %v\n%s", err, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("scanlockfs mount not ready after 30s\n%s", d.stderr.String())
		}
	}
	for _, s := range cfg.Scans {
		if _, err := os.ReadFile(filepath.Join(mnt, s, "files.json")); err != nil {
			d.stop()
			return nil, err
		}
	}
	return d, nil
}

// stop takes the mount down after a failure.
func (d *daemon) stop() {
	_ = exec.Command("fusermount3", "-u", "-z", d.mnt).Run()
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
	}
}

// finish unmounts and waits for the daemon to exit.
func (d *daemon) finish() (unmountErr, daemonErr error) {
	unmountErr = unmount(d.mnt)
	select {
	case daemonErr = <-d.exited:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		daemonErr = fmt.Errorf("did not exit after the unmount")
	}
	return unmountErr, daemonErr
}

// settledLeaks compares the daemon with its baseline until nothing is
// left over, for 10 s at most: releases are asynchronous.
func settledLeaks(pid int, lockDir, metrics string, base *leakcheck.Snapshot) []string {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		cur, err := leakcheck.Take(pid, lockDir, metrics)
		if err != nil {
			return []string{err.Error()}
		}
		if leaks := leakcheck.Leaks(base, cur); len(leaks) == 0 || time.Now().After(deadline) {
			return leaks
		}
	}
}

// outcome is what a soak found.
type outcome struct {
	report                        *checker.Report
	runErr, unmountErr, daemonErr error
	elapsed                       time.Duration
	leaks                         []string
	log                           string // the daemon's
}

// print prints the figures and problems and returns the exit code.
func (o *outcome) print() int {
	stats := ""
	for _, l := range strings.Split(o.log, "\n") {
		if strings.Contains(l, "every scan lock released") {
			stats = l
		}
	}
	code := 0
	if o.report != nil {
		fmt.Print(o.report.Summary())
		fmt.Printf("throughput: %.0f operations/s\n", float64(o.report.Ops)/o.elapsed.Seconds())
		if o.report.ViolationCount() > 0 || o.report.FailureCount() > 0 || o.report.Ops == 0 {
			code = 1
		}
	}
	if len(o.leaks) > 0 {
		fmt.Printf("leaks: %d\n  %s\n", len(o.leaks), strings.Join(o.leaks, "\n  "))
		code = 1
	} else {
		fmt.Println("leaks: none (no flock, no lease or waiter, descriptors back to the baseline)")
	}
	fmt.Printf("daemon: %s\n", strings.TrimSpace(stats))
	problems := []string{}
	for _, p := range []struct {
		what string
		err  error
	}{{"workers", o.runErr}, {"unmount", o.unmountErr}, {"daemon exit", o.daemonErr}} {
		if p.err != nil {
			problems = append(problems, p.what+": "+p.err.Error())
		}
	}
	if !strings.Contains(stats, " holders_left=0") || !strings.Contains(stats, " waiters_left=0") {
		problems = append(problems, "daemon's final statistics missing or with leases left")
	}
	for _, bad := range []string{"panic", "level=error", "level=fatal", "DATA RACE"} {
		if strings.Contains(o.log, bad) {
			problems = append(problems, "daemon log has "+bad)
		}
	}
	if len(problems) > 0 {
		fmt.Printf("problems:\n  %s\ndaemon log:\n%s\n", strings.Join(problems, "\n  "), tail(o.log, 40))
		code = 1
	}
	return code
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
