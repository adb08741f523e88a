package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testpeer"
)

// Workload 10: scanlockfs next to unmodified plantdb, on a mount of its
// own (a fresh SOURCE, so that no other workload's lock files count).
//
//   - 11a/11b: uncontended open+close of a scan file through the mount,
//     without and with the orphan check (foreign mode). For 10b a flock(1)
//     process holds a shared flock on an unlinked lock file of the scan,
//     the state plantdb's self-race leaves: every acquisition then reads
//     /proc/locks and that process's descriptors, and our readers take
//     LOCK_EX.
//   - 11c/11d: the wait of a plantdb-protocol reader (plantdb_peer.py, 100
//     ms between attempts as plantdb) under continuous writers through the
//     mount: median and 99th percentile over its requests; 10e is the
//     writers' throughput meanwhile.
const (
	plantdbScanA = "p_plain"
	plantdbScanB = "p_orphan"
	plantdbScanC = "p_polled"
)

func (b *bench) workloadPlantdb(ctx context.Context, _ []*target) error {
	rp := b.rep
	rp.define(sectionFS, "11a", "open+close, no foreign process (no orphan check)", "µs/op", false, goal{})
	rp.define(sectionFS, "11b", "open+close, orphan check on every open (plantdb raced itself)", "µs/op", false, goal{})
	rp.define(sectionFS, "11c", "plantdb reader's wait under continuous mount writers, median", "ms", false, goal{})
	rp.define(sectionFS, "11d", "the same, 99th percentile", "ms", false, goal{goalAbsMax, 300})
	rp.define(sectionFS, "11e", "mount writers' open+write+close meanwhile", "ops/s", true, goal{})
	if b.slfsMissing != "" {
		return nil
	}
	src := filepath.Join(b.dir, "plantdb-src")
	for _, s := range []string{plantdbScanA, plantdbScanB, plantdbScanC} {
		if err := os.MkdirAll(filepath.Join(src, s), 0o755); err != nil {
			return err
		}
		for i := range 4 {
			if err := os.WriteFile(filepath.Join(src, s, fmt.Sprintf("f%d", i)), make([]byte, 4096), 0o644); err != nil {
				return err
			}
		}
	}
	d, err := b.mount(ctx, vScanlockfs, "scanlockfs-plantdb", src)
	if err != nil {
		return err
	}
	orphan, err := b.orphanHolder(ctx, src, plantdbScanB)
	if err != nil {
		return err
	}
	defer func() { _ = orphan.finish(5 * time.Second) }()
	for rep := -b.cfg.Warmup; rep < b.cfg.Reps; rep++ {
		n := b.cfg.LockOps
		a, err := openCloseLoop(filepath.Join(d.mnt, plantdbScanA, "f0"), n)
		if err != nil {
			return err
		}
		c, err := openCloseLoop(filepath.Join(d.mnt, plantdbScanB, "f0"), n)
		if err != nil {
			return err
		}
		if rep >= 0 {
			rp.add("11a", vScanlockfs, a)
			rp.add("11b", vScanlockfs, c)
		}
	}
	if b.python == "" {
		rp.notef("workload 11c-11e skipped: no python3")
		return nil
	}
	for rep := -b.cfg.Warmup; rep < b.cfg.Reps; rep++ {
		med, p99, ops, err := b.plantdbReaderWaits(ctx, src, d.mnt)
		if err != nil {
			return err
		}
		if rep >= 0 {
			rp.add("11c", vScanlockfs, med)
			rp.add("11d", vScanlockfs, p99)
			rp.add("11e", vScanlockfs, ops)
		}
	}
	return nil
}

// openCloseLoop opens and closes path n times and returns µs per open.
func openCloseLoop(path string, n int) (float64, error) {
	start := time.Now()
	for range n {
		fd, err := openRetry(path, unix.O_RDONLY, 0)
		if err != nil {
			return 0, fmt.Errorf("open %s: %w", path, err)
		}
		unix.Close(fd)
	}
	return perOp(time.Since(start), n), nil
}

// orphanHolder leaves scan's lock file in SOURCE unlinked while a flock(1)
// process holds it shared, as a plantdb reader does when another plantdb
// reader's release unlinked the file they shared.
func (b *bench) orphanHolder(ctx context.Context, src, scan string) (*proc, error) {
	flockBin, err := exec.LookPath("flock")
	if err != nil {
		return nil, fmt.Errorf("workload 11 needs flock(1) (util-linux): %w", err)
	}
	dir := filepath.Join(src, ".locks")
	if err := os.MkdirAll(dir, 0o775); err != nil {
		return nil, err
	}
	lock := filepath.Join(dir, scan+".lock")
	if err := os.WriteFile(lock, nil, 0o664); err != nil {
		return nil, err
	}
	p, err := b.procs.start("orphan holder", []string{flockBin, "--shared", lock, "sh", "-c", "echo held; exec cat"}, nil, nil, false)
	if err != nil {
		return nil, err
	}
	if _, err := p.expect(ctx, 30*time.Second, "held"); err != nil {
		return p, err
	}
	return p, os.Remove(lock)
}

// plantdbReaderWaits runs two writer goroutines on the mount without a
// pause while a plantdb-protocol reader acquires and releases the scan
// on SOURCE -plantdb-waits times, and returns the reader's median and 99th
// percentile wait in ms and the writers' operations per second.
func (b *bench) plantdbReaderWaits(ctx context.Context, src, mnt string) (med, p99, opsPerSec float64, err error) {
	script := filepath.Join(b.dir, "plantdb_peer.py")
	if err := os.WriteFile(script, testpeer.PlantdbPeer, 0o644); err != nil {
		return 0, 0, 0, err
	}
	peer, err := b.procs.start("plantdb reader", []string{b.python, script, "serve", src, plantdbScanC}, nil, nil, false)
	if err != nil {
		return 0, 0, 0, err
	}
	defer func() { _ = finishAll([]*proc{peer}) }()
	if _, err := peer.expect(ctx, 2*time.Minute, "ready"); err != nil {
		return 0, 0, 0, err
	}
	stop := make(chan struct{})
	var ops atomic.Int64
	var wg sync.WaitGroup
	var werr error
	var once sync.Once
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := filepath.Join(mnt, plantdbScanC, fmt.Sprintf("f%d", i))
			buf := make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				fd, err := openRetry(path, unix.O_WRONLY, 0)
				if err == nil {
					_, err = unix.Pwrite(fd, buf, 0)
					unix.Close(fd)
				}
				if err != nil {
					once.Do(func() { werr = fmt.Errorf("mount writer: %w", err) })
					return
				}
				ops.Add(1)
			}
		}()
	}
	start := time.Now()
	waits, err := peerWaits(ctx, peer, b.cfg.PlantdbWaits)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err = errors.Join(err, werr); err != nil {
		return 0, 0, 0, err
	}
	return percentile(waits, 0.5), percentile(waits, 0.99), float64(ops.Load()) / elapsed.Seconds(), nil
}

// peerWaits has the serving peer acquire the scan shared n times (10 s
// timeout each, 50 ms apart) and returns its waits in ms.
func peerWaits(ctx context.Context, peer *proc, n int) ([]float64, error) {
	var waits []float64
	for range n {
		if err := peer.send("acquire shared 10000"); err != nil {
			return nil, err
		}
		if _, err := peer.expect(ctx, time.Minute, "waiting"); err != nil {
			return nil, err
		}
		f, err := peer.expect(ctx, time.Minute, "ok", "timeout")
		if err != nil {
			return nil, err
		}
		if f[0] == "timeout" {
			return nil, errors.New("the plantdb reader timed out after 10 s under continuous mount writers")
		}
		t0, err1 := nsField(f, 1)
		t1, err2 := nsField(f, 2)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		waits = append(waits, float64(t1-t0)/1e6)
		if err := peer.send("release"); err != nil {
			return nil, err
		}
		if _, err := peer.expect(ctx, time.Minute, "released"); err != nil {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return waits, nil
}
