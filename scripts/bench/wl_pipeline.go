package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Workloads 10 and 11, the speed issue's: find -ls of a big tree, and an
// image pipeline. Their data is made here, the first time they run.

const (
	findScan      = "find_tree"
	pipelineScans = 20
	pipelineSize  = 256 << 10
	// pipelineWorkers processes read the files, as a pipeline's stages.
	pipelineWorkers = 4
)

// pipelineScan names the scans of workload 13.
func pipelineScan(s int) string { return fmt.Sprintf("img_%03d", s) }

// workloadFind is 10: find -ls of a tree of ReaddirEntries files in 100
// directories (every name looked up, every file stat'ed).
func (b *bench) workloadFind(ctx context.Context, targets []*target) error {
	n := b.cfg.ReaddirEntries
	b.rep.define(sectionFS, "12", fmt.Sprintf("find -ls of %d files", n), "ms", false, goal{goalVsLoopback, 1.0}).countRequests("file")
	for i := 0; i < n; i++ {
		if i%100 == 0 {
			if err := makeEmptyFiles(filepath.Join(b.src, findScan, fmt.Sprint("d", i/100)), "f", min(100, n-i)); err != nil {
				return err
			}
		}
	}
	return b.interleave(ctx, targets, b.cfg.Reps, b.cfg.Warmup, func(t *target, rep int) (map[string]float64, error) {
		m, err := b.meter(t, rep)
		if err != nil {
			return nil, err
		}
		ms, err := timedIn(ctx, "", "", "sh", "-c", "find \"$1\" -ls > /dev/null", "find", filepath.Join(t.root, findScan))
		if err != nil {
			return nil, err
		}
		return map[string]float64{"12": ms}, m.mark("12", n)
	})
}

// workloadPipeline is 11: 4 worker processes read Files/2 files of 256
// KiB spread over 20 scans (xargs -P 4 cat), as an image pipeline does.
func (b *bench) workloadPipeline(ctx context.Context, targets []*target) error {
	n := max(b.cfg.Files/2, pipelineScans)
	b.rep.define(sectionFS, "13", fmt.Sprintf("image pipeline: %d workers read %d files of 256 KiB in %d scans", pipelineWorkers, n, pipelineScans), "ms", false, goal{goalVsLoopback, 1.0}).countRequests("file")
	block := make([]byte, pipelineSize)
	var rel []string
	for i := 0; i < n; i++ {
		r := filepath.Join(pipelineScan(i%pipelineScans), fmt.Sprintf("img%05d.png", i))
		if err := os.MkdirAll(filepath.Join(b.src, filepath.Dir(r)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(b.src, r), block, 0o644); err != nil {
			return err
		}
		rel = append(rel, r)
	}
	list := strings.Join(rel, "\n") + "\n"
	return b.interleave(ctx, targets, b.cfg.Reps, b.cfg.Warmup, func(t *target, rep int) (map[string]float64, error) {
		m, err := b.meter(t, rep)
		if err != nil {
			return nil, err
		}
		ms, err := timedIn(ctx, t.root, list, "xargs", "-P", fmt.Sprint(pipelineWorkers), "-n", "25", "cat")
		if err != nil {
			return nil, err
		}
		return map[string]float64{"13": ms}, m.mark("13", n)
	})
}
