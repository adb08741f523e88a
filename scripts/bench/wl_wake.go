package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
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

// wakeOnce measures one wake-up of n openers, in ms.
func (b *bench) wakeOnce(ctx context.Context, t *target, n int) (float64, error) {
	writers, err := b.startHolders(ctx, "wake writer", 1)
	defer func() { _ = finishAll(writers) }()
	if err != nil {
		return 0, err
	}
	writer := writers[0]
	if _, err := writer.hold(ctx, 30*time.Second, "open w "+filepath.Join(t.root, wakeScan, "w.bin")); err != nil {
		return 0, err
	}
	openers, err := b.startHolders(ctx, "wake opener", n)
	defer func() { _ = finishAll(openers) }()
	if err != nil {
		return 0, err
	}
	for i, p := range openers {
		if err := p.send("open r %s", filepath.Join(t.root, wakeScan, fmt.Sprintf("r_%03d", i))); err != nil {
			return 0, err
		}
	}
	for _, p := range openers {
		if _, err := p.expect(ctx, 30*time.Second, "opening"); err != nil {
			return 0, err
		}
	}
	if err := waitBlockedInOpen(openers); err != nil {
		return 0, err
	}
	if err := writer.send("close"); err != nil {
		return 0, err
	}
	t0, err := writer.expectNS(ctx, 30*time.Second, "closing", 1)
	if err != nil {
		return 0, err
	}
	var last int64
	for _, p := range openers {
		t1, err := p.expectNS(ctx, 2*time.Minute, "opened", 1)
		if err != nil {
			return 0, err
		}
		last = max(last, t1)
	}
	return float64(last-t0) / 1e6, nil
}

// waitBlockedInOpen waits until every opener is really waiting in the
// kernel, before the writer lets go.
func waitBlockedInOpen(openers []*proc) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range openers {
		for !blockedInOpen(p.pid()) {
			select {
			case line := <-p.lines:
				return fmt.Errorf("%s opened before the writer closed (%q): the open did not wait", p.name, line)
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is not blocked in open(2) after 30s", p.name)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// startHolders starts n holder helpers and waits until each is ready;
// the caller finishes those returned, also on error.
func (b *bench) startHolders(ctx context.Context, name string, n int) ([]*proc, error) {
	return startReady(ctx, n, func(i int) (*proc, error) {
		return b.startHelper(fmt.Sprint(name, " ", i), helperHolder)
	})
}

// hold sends a holder helper command (open, openlist or close) and waits
// for both its answers (opening then opened, or closing then closed); it
// returns the first, which has the time the command started.
func (p *proc) hold(ctx context.Context, timeout time.Duration, cmd string) ([]string, error) {
	words := [2]string{"opening", "opened"}
	if cmd == "close" {
		words = [2]string{"closing", "closed"}
	}
	if err := p.send("%s", cmd); err != nil {
		return nil, err
	}
	f, err := p.expect(ctx, timeout, words[0])
	if err != nil {
		return nil, err
	}
	_, err = p.expect(ctx, timeout, words[1])
	return f, err
}

// blockedInOpen reports whether a thread of pid sits in openat(2), from
// /proc/PID/task/TID/syscall (the syscall number while blocked).
func blockedInOpen(pid int) bool { return procfs.BlockedIn(pid, unix.SYS_OPENAT) }

// workloadMemory is 9: the daemon's peak resident memory (VmHWM) on
// fresh mounts of a SOURCE of its own, against the loopback doing the
// same. 9b: every one of -mem-scans scans gets locked, -mem-handles at a
// time, each by an open handle held by a client process (so the daemon
// has seen them all and holds that many handles at once). 9c: all scans
// locked at once, one handle each, where the open file limit allows it.
func (b *bench) workloadMemory(ctx context.Context) error {
	c := b.cfg
	rp := b.rep
	rp.define(sectionFS, "9a", "daemon RSS after mount, idle", "MiB", false, goal{})
	rp.define(sectionFS, "9b", fmt.Sprintf("daemon peak RSS, %d scans locked, %d handles open at a time", c.MemScans, c.MemHandlesPerProcess), "MiB", false, goal{goalAbsMax, 64})
	rp.define(sectionFS, "9c", fmt.Sprintf("daemon peak RSS, %d scans locked at once by as many handles", c.MemScans), "MiB", false, goal{goalAbsMax, 64})
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
	// scanlockfs holds two descriptors per locked scan (the backing file
	// and the scan's lock file); the daemons inherit this process's limit.
	var lim unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	allAtOnce := lim.Cur >= uint64(2*c.MemScans+1024)
	if !allAtOnce {
		rp.notef("9c: not measured: %d scans locked at once need about %d descriptors in the scanlockfs daemon "+
			"(a backing file and a lock file per scan), the open file limit here is %d", c.MemScans, 2*c.MemScans, lim.Cur)
	}
	kinds := []string{vLoopback}
	if b.slfsMissing == "" {
		kinds = append(kinds, vScanlockfs)
	}
	for rep := 0; rep < c.MemReps; rep++ {
		for i := range kinds {
			kind := kinds[(i+rep)%len(kinds)]
			idle, peak, err := b.memoryOnce(ctx, kind, src, false)
			if err != nil {
				return fmt.Errorf("%s, repetition %d: %w", kind, rep, err)
			}
			rp.add("9a", kind, idle)
			rp.add("9b", kind, peak)
			if allAtOnce {
				if _, peak, err = b.memoryOnce(ctx, kind, src, true); err != nil {
					return fmt.Errorf("%s, repetition %d, all at once: %w", kind, rep, err)
				}
				rp.add("9c", kind, peak)
			}
		}
	}
	rp.notef("9: client processes hold at most %d handles each; every measure on a fresh mount", c.MemHandlesPerProcess)
	return nil
}

// memoryOnce mounts src afresh, locks every scan through a held handle
// in chunks of -mem-handles (one chunk after the other, or all chunks at
// once in as many processes) and returns the daemon's idle and peak RSS.
func (b *bench) memoryOnce(ctx context.Context, kind, src string, allAtOnce bool) (idle, peak float64, err error) {
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
	lists, err := b.memoryLists(d.mnt, kind)
	if err != nil {
		return 0, 0, err
	}
	nproc := 1
	if allAtOnce {
		nproc = len(lists)
	}
	holders, err := b.startHolders(ctx, "memory holder", nproc)
	defer func() { _ = finishAll(holders) }()
	if err != nil {
		return 0, 0, err
	}
	for i, list := range lists {
		p := holders[min(i, nproc-1)]
		if _, err := p.hold(ctx, 5*time.Minute, "openlist r "+list); err != nil {
			return 0, 0, err
		}
		if allAtOnce {
			continue
		}
		if _, err := p.hold(ctx, time.Minute, "close"); err != nil {
			return 0, 0, err
		}
	}
	hwm, err := procStatusKiB(pid, "VmHWM")
	if err != nil {
		return 0, 0, err
	}
	return float64(rss) / 1024, float64(hwm) / 1024, nil
}

// memoryLists writes the files.json paths of workload 9's scans under
// mnt, -mem-handles to a file, and returns the files' names.
func (b *bench) memoryLists(mnt, kind string) ([]string, error) {
	c := b.cfg
	var lists []string
	for i := 0; i*c.MemHandlesPerProcess < c.MemScans; i++ {
		var paths []string
		for j := i * c.MemHandlesPerProcess; j < min((i+1)*c.MemHandlesPerProcess, c.MemScans); j++ {
			paths = append(paths, filepath.Join(mnt, fmt.Sprintf("mem_%05d", j), "files.json"))
		}
		list := filepath.Join(b.dir, fmt.Sprintf("mem-%s-%d.list", kind, i))
		if err := os.WriteFile(list, []byte(strings.Join(paths, "\n")), 0o644); err != nil {
			return nil, err
		}
		lists = append(lists, list)
	}
	return lists, nil
}
