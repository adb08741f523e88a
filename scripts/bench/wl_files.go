package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The client calls the kernel directly (no os.File, no poller) so that
// the same few syscalls are timed on every target. Calls are retried on
// EINTR, as Go's os package and Python do.

func openRetry(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func statRetry(path string, st *unix.Stat_t) error {
	for {
		if err := unix.Stat(path, st); err != unix.EINTR {
			return err
		}
	}
}

func unlinkRetry(path string) error {
	for {
		if err := unix.Unlink(path); err != unix.EINTR {
			return err
		}
	}
}

func readFull(fd int, buf []byte) (int64, error) {
	var total int64
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
		total += int64(n)
	}
}

func writeAll(fd int, buf []byte) error {
	for len(buf) > 0 {
		n, err := unix.Write(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}

func perOp(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(n) }

// workloadOpen is 1: open+close, open+4 KiB read+close and open+4 KiB
// write+close of existing files spread over many scans.
func (b *bench) workloadOpen(ctx context.Context, targets []*target) error {
	rp := b.rep
	rp.define(sectionFS, "1a", "open+close", "µs/op", false, goal{goalVsLoopback, 1.15}).countRequests("open")
	rp.define(sectionFS, "1b", "open+4 KiB read+close", "µs/op", false, goal{goalVsLoopback, 1.15}).countRequests("open")
	rp.define(sectionFS, "1c", "open+4 KiB write+close", "µs/op", false, goal{goalVsLoopback, 1.15}).countRequests("open")
	var rel []string
	for s := 0; s < b.cfg.Scans; s++ {
		for j := 0; j < filesPerScan(b.cfg.Files, b.cfg.Scans, s); j++ {
			rel = append(rel, openFile(s, j))
		}
	}
	buf := make([]byte, 4096)
	ops := []struct {
		id, what string
		flags    int
		io       func(fd int) (int, error) // nil: open and close only
	}{
		{"1a", "reading", unix.O_RDONLY, nil},
		{"1b", "reading", unix.O_RDONLY, func(fd int) (int, error) { return unix.Read(fd, buf) }},
		{"1c", "writing", unix.O_WRONLY, func(fd int) (int, error) { return unix.Pwrite(fd, buf, 0) }},
	}
	return b.interleave(ctx, targets, b.cfg.Reps, b.cfg.Warmup, func(t *target, rep int) (map[string]float64, error) {
		paths := make([]string, len(rel))
		for i, r := range rel {
			paths[i] = filepath.Join(t.root, r)
		}
		res := map[string]float64{}
		m, err := b.meter(t, rep)
		if err != nil {
			return nil, err
		}
		for _, op := range ops {
			start := time.Now()
			for _, p := range paths {
				if err := openIOClose(p, op.flags, op.what, op.io, len(buf)); err != nil {
					return nil, err
				}
			}
			res[op.id] = perOp(time.Since(start), len(paths))
			if err := m.mark(op.id, len(paths)); err != nil {
				return nil, err
			}
		}
		return res, nil
	})
}

// openIOClose opens path with flags, does io on it (if not nil), which
// must transfer want bytes, and closes it.
func openIOClose(path string, flags int, what string, io func(fd int) (int, error), want int) error {
	fd, err := openRetry(path, flags, 0)
	if err != nil {
		return fmt.Errorf("open %s for %s: %w", path, what, err)
	}
	if io == nil {
		unix.Close(fd)
		return nil
	}
	n, err := io(fd)
	unix.Close(fd)
	if err != nil || n != want {
		return fmt.Errorf("%s %s: %d bytes, %v", what, path, n, err)
	}
	return nil
}

// workloadStat is 2: stat of many files on first touch (a directory this
// target has never seen) and repeated, and readdir of a big directory.
func (b *bench) workloadStat(ctx context.Context, targets []*target) error {
	rp := b.rep
	rp.define(sectionFS, "2a", "stat, first touch", "µs/op", false, goal{goalVsLoopback, 1.05}).countRequests("stat")
	rp.define(sectionFS, "2b", "stat, repeated", "µs/op", false, goal{goalVsLoopback, 1.05}).countRequests("stat")
	rp.define(sectionFS, "2c", fmt.Sprintf("readdir of %d entries", b.cfg.ReaddirEntries), "ms", false, goal{goalVsLoopback, 1.05}).countRequests("listing")
	n := b.cfg.StatFiles
	buf := make([]byte, 64<<10)
	return b.interleave(ctx, targets, b.cfg.Reps, b.cfg.Warmup, func(t *target, rep int) (map[string]float64, error) {
		dir := filepath.Join(t.root, statScan(t.name, rep+b.cfg.Warmup))
		paths := make([]string, n)
		for i := range paths {
			paths[i] = filepath.Join(dir, fmt.Sprintf("f%05d", i))
		}
		res := map[string]float64{}
		m, err := b.meter(t, rep)
		if err != nil {
			return nil, err
		}
		var st unix.Stat_t
		for pass, id := range []string{"2a", "2b"} {
			start := time.Now()
			for _, p := range paths {
				if err := statRetry(p, &st); err != nil {
					return nil, fmt.Errorf("stat %s (pass %d): %w", p, pass+1, err)
				}
			}
			res[id] = perOp(time.Since(start), n)
			if err := m.mark(id, n); err != nil {
				return nil, err
			}
		}

		list := filepath.Join(t.root, readdirScan, "list")
		start := time.Now()
		fd, err := openRetry(list, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", list, err)
		}
		total := 0
		for {
			k, err := unix.Getdents(fd, buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("getdents %s: %w", list, err)
			}
			if k == 0 {
				break
			}
			total += k
		}
		unix.Close(fd)
		res["2c"] = float64(time.Since(start).Nanoseconds()) / 1e6
		if total == 0 {
			return nil, fmt.Errorf("readdir %s returned nothing", list)
		}
		return res, m.mark("2c", 1)
	})
}

// workloadCreate is 3: create + 4 KiB write + close of new small files in
// one scan, then unlink of them.
func (b *bench) workloadCreate(ctx context.Context, targets []*target) error {
	rp := b.rep
	rp.define(sectionFS, "3a", "create+4 KiB write+close", "µs/op", false, goal{goalVsLoopback, 1.2}).countRequests("file")
	rp.define(sectionFS, "3b", "unlink", "µs/op", false, goal{}).countRequests("unlink")
	n := b.cfg.CreateFiles
	buf := make([]byte, 4096)
	// Every repetition creates new files in a new directory: nothing to
	// warm up.
	return b.interleave(ctx, targets, b.cfg.Reps, 0, func(t *target, rep int) (map[string]float64, error) {
		dir := filepath.Join(t.root, createScan(t.name), fmt.Sprint("r", rep))
		paths := make([]string, n)
		for i := range paths {
			paths[i] = filepath.Join(dir, fmt.Sprintf("new_%05d.bin", i))
		}
		res := map[string]float64{}
		m, err := b.meter(t, rep)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		for _, p := range paths {
			fd, err := openRetry(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
			if err != nil {
				return nil, fmt.Errorf("create %s: %w", p, err)
			}
			err = writeAll(fd, buf)
			unix.Close(fd)
			if err != nil {
				return nil, fmt.Errorf("write %s: %w", p, err)
			}
		}
		res["3a"] = perOp(time.Since(start), n)
		if err := m.mark("3a", n); err != nil {
			return nil, err
		}
		start = time.Now()
		for _, p := range paths {
			if err := unlinkRetry(p); err != nil {
				return nil, fmt.Errorf("unlink %s: %w", p, err)
			}
		}
		res["3b"] = perOp(time.Since(start), n)
		return res, m.mark("3b", n)
	})
}
