package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// workloadWake is 8: opener processes block in open(2) behind a writer
// that holds a file of the scan open for writing; the figure is the time
// from the start of the writer's close until the last opener has its
// file open (CLOCK_MONOTONIC stamps taken by the processes themselves).
func (b *bench) workloadWake(ctx context.Context, targets []*target) error {
	n := b.cfg.WakeOpeners
	b.rep.define(sectionFS, "8", fmt.Sprintf("wake-up of %d opens blocked behind a writer", n), "ms", false, goal{goalAbsMax, 50})
	var t *target
	for _, x := range targets {
		if x.name == vScanlockfs {
			t = x
		}
	}
	if t == nil {
		return nil
	}
	for rep := -b.cfg.Warmup; rep < b.cfg.Reps; rep++ {
		ms, err := b.wakeOnce(ctx, t, n)
		if err != nil {
			return fmt.Errorf("repetition %d: %w", rep, err)
		}
		if rep >= 0 {
			b.rep.add("8", vScanlockfs, ms)
		}
	}
	return nil
}

func (b *bench) wakeOnce(ctx context.Context, t *target, n int) (float64, error) {
	writer, err := b.startHelper("wake writer", helperHolder)
	if err != nil {
		return 0, err
	}
	defer func() { _ = finishAll([]*proc{writer}) }()
	var openers []*proc
	defer func() { _ = finishAll(openers) }()
	if _, err := writer.expect(ctx, 30*time.Second, "ready"); err != nil {
		return 0, err
	}
	if err := writer.send("open w %s", filepath.Join(t.root, wakeScan, "w.bin")); err != nil {
		return 0, err
	}
	if _, err := writer.expect(ctx, 30*time.Second, "opening"); err != nil {
		return 0, err
	}
	if _, err := writer.expect(ctx, 30*time.Second, "opened"); err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		p, err := b.startHelper(fmt.Sprint("wake opener ", i), helperHolder)
		if err != nil {
			return 0, err
		}
		openers = append(openers, p)
	}
	for i, p := range openers {
		if _, err := p.expect(ctx, 30*time.Second, "ready"); err != nil {
			return 0, err
		}
		if err := p.send("open r %s", filepath.Join(t.root, wakeScan, fmt.Sprintf("r_%03d", i))); err != nil {
			return 0, err
		}
	}
	for _, p := range openers {
		if _, err := p.expect(ctx, 30*time.Second, "opening"); err != nil {
			return 0, err
		}
	}
	// Every opener must really be waiting in the kernel before the
	// writer lets go.
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range openers {
		for !blockedInOpen(p.pid()) {
			select {
			case line := <-p.lines:
				return 0, fmt.Errorf("%s opened before the writer closed (%q): the open did not wait", p.name, line)
			default:
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("%s is not blocked in open(2) after 30s", p.name)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := writer.send("close"); err != nil {
		return 0, err
	}
	f, err := writer.expect(ctx, 30*time.Second, "closing")
	if err != nil {
		return 0, err
	}
	t0, err := nsField(f, 1)
	if err != nil {
		return 0, err
	}
	var last int64
	for _, p := range openers {
		f, err := p.expect(ctx, 2*time.Minute, "opened")
		if err != nil {
			return 0, err
		}
		t1, err := nsField(f, 1)
		if err != nil {
			return 0, err
		}
		last = max(last, t1)
	}
	return float64(last-t0) / 1e6, nil
}

// blockedInOpen reports whether a thread of pid sits in openat(2), from
// /proc/PID/task/TID/syscall (the syscall number while blocked).
func blockedInOpen(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(data))
		if len(f) > 0 {
			if nr, err := strconv.Atoi(f[0]); err == nil && nr == unix.SYS_OPENAT {
				return true
			}
		}
	}
	return false
}

// workloadMemory is 9: the daemon's peak resident memory (VmHWM) while
// client processes hold one file open in each of many scans, on fresh
// mounts of a SOURCE of its own, against the loopback with the same
// handles.
func (b *bench) workloadMemory(ctx context.Context) error {
	c := b.cfg
	rp := b.rep
	rp.define(sectionFS, "9a", "daemon RSS after mount, idle", "MiB", false, goal{})
	rp.define(sectionFS, "9b", fmt.Sprintf("daemon peak RSS, %d scans locked by %d open handles", c.MemScans, c.MemScans), "MiB", false, goal{goalAbsMax, 64})
	src := filepath.Join(b.dir, "src-mem")
	for i := 0; i < c.MemScans; i++ {
		dir := filepath.Join(src, fmt.Sprintf("mem_%05d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "files.json"), []byte("{}"), 0o644); err != nil {
			return err
		}
	}
	b.raiseFileLimit(2*c.MemScans + 4096)
	kinds := []string{vLoopback}
	if b.slfsMissing == "" {
		kinds = append(kinds, vScanlockfs)
	}
	procsNeeded := (c.MemScans + c.MemHandlesPerProcess - 1) / c.MemHandlesPerProcess
	for rep := 0; rep < c.MemReps; rep++ {
		for i := range kinds {
			kind := kinds[(i+rep)%len(kinds)]
			idle, peak, err := b.memoryOnce(ctx, kind, src, procsNeeded)
			if err != nil {
				return fmt.Errorf("%s, repetition %d: %w", kind, rep, err)
			}
			rp.add("9a", kind, idle)
			rp.add("9b", kind, peak)
		}
	}
	rp.notef("9: %d client processes hold %d handles each; every repetition on fresh mounts", procsNeeded, c.MemHandlesPerProcess)
	return nil
}

func (b *bench) memoryOnce(ctx context.Context, kind, src string, nprocs int) (idle, peak float64, err error) {
	c := b.cfg
	d, err := b.mount(ctx, kind, "mem-"+kind, src)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if uerr := d.unmount(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	pid := d.p.pid()
	rss, err := procStatusKiB(pid, "VmRSS")
	if err != nil {
		return 0, 0, err
	}
	var holders []*proc
	defer func() { _ = finishAll(holders) }()
	for i := 0; i < nprocs; i++ {
		var paths []string
		for j := i * c.MemHandlesPerProcess; j < min((i+1)*c.MemHandlesPerProcess, c.MemScans); j++ {
			paths = append(paths, filepath.Join(d.mnt, fmt.Sprintf("mem_%05d", j), "files.json"))
		}
		list := filepath.Join(b.dir, fmt.Sprintf("mem-%s-%d.list", kind, i))
		if err := os.WriteFile(list, []byte(strings.Join(paths, "\n")), 0o644); err != nil {
			return 0, 0, err
		}
		p, err := b.startHelper(fmt.Sprint("memory holder ", i), helperHolder)
		if err != nil {
			return 0, 0, err
		}
		holders = append(holders, p)
		if _, err := p.expect(ctx, 30*time.Second, "ready"); err != nil {
			return 0, 0, err
		}
		if err := p.send("openlist r %s", list); err != nil {
			return 0, 0, err
		}
	}
	for _, p := range holders {
		if _, err := p.expect(ctx, 5*time.Minute, "opening"); err != nil {
			return 0, 0, err
		}
		if _, err := p.expect(ctx, 5*time.Minute, "opened"); err != nil {
			return 0, 0, err
		}
	}
	hwm, err := procStatusKiB(pid, "VmHWM")
	if err != nil {
		return 0, 0, err
	}
	return float64(rss) / 1024, float64(hwm) / 1024, nil
}

// raiseFileLimit lifts RLIMIT_NOFILE for the daemons started from now on
// (children inherit it; Go raises its soft limit to the hard one): a
// daemon holds a backing descriptor per open handle and a lock file per
// locked scan.
func (b *bench) raiseFileLimit(want int) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Max >= uint64(want) {
		return
	}
	old := lim.Max
	lim.Cur, lim.Max = uint64(want), uint64(want)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		b.rep.notef("9: could not raise the open file limit from %d to %d (%v): the daemons may run out of descriptors", old, want, err)
		return
	}
	b.rep.notef("9: the open file limit was raised from %d to %d for the daemons", old, want)
}
