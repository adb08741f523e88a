package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// workloadTools is 5: real tools on a scan tree: tar -c of it (into a
// pipe, so that tar cannot skip reading as it does for /dev/null) and
// cp -r of it into a new scan.
func (b *bench) workloadTools(ctx context.Context, targets []*target) error {
	rp := b.rep
	rp.define(sectionFS, "5a", fmt.Sprintf("tar -c of a %d-file scan", b.cfg.TreeFiles), "ms", false, goal{goalVsLoopback, 1.15}).countRequests("file")
	rp.define(sectionFS, "5b", fmt.Sprintf("cp -r of a %d-file scan into a new scan", b.cfg.TreeFiles), "ms", false, goal{goalVsLoopback, 1.15}).countRequests("file")
	return b.interleave(ctx, targets, b.cfg.Reps, b.cfg.Warmup, func(t *target, rep int) (map[string]float64, error) {
		res := map[string]float64{}
		tar := exec.CommandContext(ctx, "tar", "-cf", "-", "-C", t.root, treeScan)
		tar.Stdout = io.Discard
		var stderr limitedBuffer
		tar.Stderr = &stderr
		m, err := b.meter(t, rep)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := tar.Run(); err != nil {
			return nil, fmt.Errorf("tar -c %s: %v: %s", t.root, err, stderr.String())
		}
		res["5a"] = float64(time.Since(start).Nanoseconds()) / 1e6
		if err := m.mark("5a", b.cfg.TreeFiles); err != nil {
			return nil, err
		}

		dst := filepath.Join(t.root, fmt.Sprintf("cp_%s_%d", t.name, rep+b.cfg.Warmup))
		cp := exec.CommandContext(ctx, "cp", "-r", filepath.Join(t.root, treeScan), dst)
		cp.Stderr = &stderr
		start = time.Now()
		if err := cp.Run(); err != nil {
			return nil, fmt.Errorf("cp -r into %s: %v: %s", dst, err, stderr.String())
		}
		res["5b"] = float64(time.Since(start).Nanoseconds()) / 1e6
		if err := m.mark("5b", b.cfg.TreeFiles); err != nil {
			return nil, err
		}
		// Through the same target, so that the mount's view stays true.
		if err := os.RemoveAll(dst); err != nil {
			return nil, err
		}
		return res, nil
	})
}

type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if len(l.b) < 4096 {
		l.b = append(l.b, p[:min(len(p), 4096-len(l.b))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// workloadParallel is 6: four reader processes, each in its own scan,
// start together; the figure is the wall time until the last is done.
// Locking must not serialize different scans.
func (b *bench) workloadParallel(ctx context.Context, targets []*target) error {
	b.rep.define(sectionFS, "6", fmt.Sprintf("4 parallel readers in 4 scans, %d files each", b.cfg.ParFiles), "ms", false, goal{goalVsLoopback, 1.15}).countRequests("file")
	var readers []*proc
	defer func() { _ = finishAll(readers) }()
	for i := 0; i < 4; i++ {
		p, err := b.startHelper(fmt.Sprint("reader ", i), helperReader)
		if err != nil {
			return err
		}
		readers = append(readers, p)
		if _, err := p.expect(ctx, 30*time.Second, "ready"); err != nil {
			return err
		}
	}
	err := b.interleave(ctx, targets, b.cfg.Reps, b.cfg.Warmup, func(t *target, rep int) (map[string]float64, error) {
		m, err := b.meter(t, rep)
		if err != nil {
			return nil, err
		}
		for i, p := range readers {
			if err := p.send("read %s %d", filepath.Join(t.root, parScan(i), "images"), b.cfg.ParFiles); err != nil {
				return nil, err
			}
		}
		var first, last int64
		for i, p := range readers {
			f, err := p.expect(ctx, 5*time.Minute, "done")
			if err != nil {
				return nil, err
			}
			s, err1 := nsField(f, 1)
			e, err2 := nsField(f, 2)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad answer %q", f)
			}
			if i == 0 || s < first {
				first = s
			}
			last = max(last, e)
		}
		return map[string]float64{"6": float64(last-first) / 1e6}, m.mark("6", 4*b.cfg.ParFiles)
	})
	if err != nil {
		return err
	}
	b.rep.notef("6: the target for 6 is not in the issue; it uses the open+read+close bound")
	return nil
}
