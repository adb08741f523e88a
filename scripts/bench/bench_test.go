package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"scanlockfs/internal/procfs"
	"scanlockfs/internal/testutil"
)

// TestMain lets the test binary serve as the bench's helper processes,
// as the bench binary itself does.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// requireFUSE skips without FUSE, except in CI, where a benchmark that
// silently stopped running would rot.
func requireFUSE(t *testing.T) {
	t.Helper()
	testutil.RequireFUSE(t)
}

// TestSmoke runs the whole benchmark with tiny sizes: build, data, mounts,
// every workload, report, CSV and plot, and the clean-up. It judges no
// figure; it checks that every measure was taken on every target it
// belongs to and that the outputs are well-formed.
func TestSmoke(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	out := func(name string) string { return filepath.Join(dir, name) }
	var stdout, stderr bytes.Buffer
	cfg, err := parseFlags([]string{"-tiny", "-workdir", dir, "-build-flags", "-race",
		"-csv", out("bench.csv"), "-markdown", out("bench.md"), "-plot", out("ratios.png")}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	if err := run(ctx, cfg, &stdout, &stderr); err != nil {
		t.Fatalf("bench failed after %v: %v\nstderr:\n%s", time.Since(start), err, stderr.String())
	}
	t.Logf("bench ran in %v; its log:\n%s", time.Since(start), stderr.String())

	// Nothing left behind: no mount, no temporary directory.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "scanlockfs-bench-") {
			t.Errorf("temporary directory %s left behind", e.Name())
		}
	}
	mounts, err := procfs.ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.MountPoint == dir || strings.HasPrefix(m.MountPoint, dir+"/") {
			t.Errorf("mount left behind under %s: %+v", dir, m)
		}
	}

	python := true
	if _, err := exec.LookPath("python3"); err != nil {
		python = false
		t.Log("python3 missing: the Python peer is not checked")
	}
	want := map[string][]string{}
	for _, id := range []string{"1a", "1b", "1c", "2a", "2b", "2c", "3a", "3b", "4a", "4b", "4c", "4d", "5a", "5b", "6", "12", "13"} {
		want[id] = fsVariants
	}
	// Passthrough off: mounts of their own, no loopback-defaults.
	want["4c"] = []string{vNative, vLoopback, vScanlockfs}
	want["4d"] = want["4c"]
	want["8"] = []string{vScanlockfs}
	want["11a"] = []string{vScanlockfs}
	want["11b"] = []string{vScanlockfs}
	if python {
		for _, id := range []string{"11c", "11d", "11e"} {
			want[id] = []string{vScanlockfs}
		}
	}
	want["9a"] = []string{vLoopback, vScanlockfs}
	want["9b"] = []string{vLoopback, vScanlockfs}
	want["9c"] = []string{vLoopback, vScanlockfs} // tiny: within any file limit
	for _, id := range []string{"7a", "7b", "7c", "7d", "7e", "7f", "7g", "7h"} {
		want[id] = []string{vGo}
		if python {
			want[id] = append(want[id], vPython)
		}
	}
	// FUSE requests per operation, on every FUSE target of the row.
	wantReqs := map[string][]string{}
	for _, id := range []string{"1a", "1b", "1c", "2a", "2b", "2c", "3a", "3b", "4a", "4b", "5a", "5b", "6", "12", "13"} {
		wantReqs[id] = fsVariants[1:]
	}
	wantReqs["4c"] = []string{vLoopback, vScanlockfs}
	wantReqs["4d"] = wantReqs["4c"]
	checkCSV(t, out("bench.csv"), want)
	checkRequestsCSV(t, out("bench.csv"), wantReqs)
	checkMarkdown(t, stdout.String(), want)
	checkRequestsMarkdown(t, stdout.String(), wantReqs)
	if md, err := os.ReadFile(out("bench.md")); err != nil || !bytes.Equal(md, stdout.Bytes()) {
		t.Errorf("-markdown file differs from what was printed (%v)", err)
	}
	png, err := os.ReadFile(out("ratios.png"))
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 1000 {
		t.Errorf("-plot did not write a PNG (%d bytes, %v)", len(png), err)
	}
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll() // also fails on ragged lines
	if err != nil {
		t.Fatalf("CSV: %v", err)
	}
	return recs
}

func checkCSV(t *testing.T, path string, want map[string][]string) {
	t.Helper()
	recs := readCSV(t, path)
	if len(recs) < 2 || strings.Join(recs[0], ",") != strings.Join(csvHeader, ",") {
		t.Fatalf("CSV header %q, want %q", recs[0], csvHeader)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	got := map[string]map[string]bool{}
	for _, r := range recs[1:] {
		id, variant := r[col["id"]], r[col["variant"]]
		if got[id] == nil {
			got[id] = map[string]bool{}
		}
		got[id][variant] = true
		n, err := strconv.Atoi(r[col["n"]])
		if err != nil || n < 1 {
			t.Errorf("CSV %s/%s: n %q", id, variant, r[col["n"]])
		}
		for _, c := range []string{"median", "p25", "p75", "min", "max"} {
			v, err := strconv.ParseFloat(r[col[c]], 64)
			if err != nil || v < 0 {
				t.Errorf("CSV %s/%s: %s %q is not a measurement", id, variant, c, r[col[c]])
			}
		}
		if s := r[col["status"]]; s != "" && s != "pass" && s != "miss" && s != "n/a" {
			t.Errorf("CSV %s/%s: status %q", id, variant, s)
		}
	}
	for id, variants := range want {
		for _, v := range variants {
			if !got[id][v] {
				t.Errorf("CSV has no %s measurement of %s", v, id)
			}
		}
	}
}

// checkRequestsCSV checks the requests columns: filled on the lines of
// want (and only on FUSE targets), and exact where the protocol fixes the
// count, which also proves that the bench's own readings of the counters
// were taken off and that the counts belong to the timed part: one OPEN
// per open(2), one OPENDIR per listing, a LOOKUP per first stat, READs
// when passthrough is off.
func checkRequestsCSV(t *testing.T, path string, want map[string][]string) {
	t.Helper()
	recs := readCSV(t, path)
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	got := map[string]map[string]map[string]float64{}
	for _, r := range recs[1:] {
		id, variant, per := r[col["id"]], r[col["variant"]], r[col["requests_per"]]
		if per == "" {
			continue
		}
		if variant == vNative {
			t.Errorf("CSV %s/native has requests", id)
		}
		total, err := strconv.ParseFloat(r[col["requests_total"]], 64)
		if err != nil || total < 0 {
			t.Errorf("CSV %s/%s: requests_total %q", id, variant, r[col["requests_total"]])
		}
		byOp := map[string]float64{}
		sum := 0.0
		for _, kv := range strings.Fields(r[col["requests_by_op"]]) {
			op, n, _ := strings.Cut(kv, "=")
			v, err := strconv.ParseFloat(n, 64)
			if err != nil || v <= 0 || op == "" {
				t.Errorf("CSV %s/%s: requests_by_op %q", id, variant, r[col["requests_by_op"]])
			}
			byOp[op] = v
			sum += v
		}
		if math.Abs(sum-total) > 1e-3*max(1, total) {
			t.Errorf("CSV %s/%s: requests by opcode add up to %g, total %g", id, variant, sum, total)
		}
		if got[id] == nil {
			got[id] = map[string]map[string]float64{}
		}
		got[id][variant] = byOp
	}
	exact := []struct {
		ids []string
		op  string
		n   float64
	}{{[]string{"1a", "1b", "1c"}, "OPEN", 1}, {[]string{"2c"}, "OPENDIR", 1}}
	for id, variants := range want {
		for _, v := range variants {
			byOp, ok := got[id][v]
			if !ok {
				t.Errorf("CSV has no requests of %s on %s", id, v)
				continue
			}
			for _, e := range exact {
				if slices.Contains(e.ids, id) && math.Abs(byOp[e.op]-e.n) > 1e-9 {
					t.Errorf("CSV %s/%s: %s %g per operation, want %g (all: %v)", id, v, e.op, byOp[e.op], e.n, byOp)
				}
			}
			if (id == "2a" && byOp["LOOKUP"] < 1) || (id == "4c" && byOp["READ"] == 0) {
				t.Errorf("CSV %s/%s: requests %v", id, v, byOp)
			}
		}
	}
}

// checkRequestsMarkdown checks that the requests table has a filled cell
// for every row and target of want.
func checkRequestsMarkdown(t *testing.T, md string, want map[string][]string) {
	t.Helper()
	head := "| # | workload | per | " + strings.Join(fsVariants[1:], " | ") + " |"
	_, table, ok := strings.Cut(md, head+"\n")
	if !ok {
		t.Fatalf("Markdown has no requests table %q:\n%s", head, md)
	}
	cells := map[string][]string{}
	for _, line := range strings.Split(table, "\n")[1:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		c := strings.Split(line, "|")
		cells[strings.TrimSpace(c[1])] = c[4 : len(c)-1]
	}
	for id, variants := range want {
		for _, v := range variants {
			i := slices.Index(fsVariants[1:], v)
			if c, ok := cells[id]; !ok || strings.TrimSpace(c[i]) == "—" {
				t.Errorf("Markdown requests table has no %s figure for %s", v, id)
			}
		}
	}
}

func checkMarkdown(t *testing.T, md string, want map[string][]string) {
	t.Helper()
	rows := map[string]bool{}
	cols := 0
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			cols = 0
			continue
		}
		n := strings.Count(line, "|")
		if cols == 0 {
			cols = n
		} else if n != cols {
			t.Errorf("table line has %d cells, its header %d: %q", n-1, cols-1, line)
		}
		cells := strings.Split(line, "|")
		if len(cells) > 2 {
			rows[strings.TrimSpace(cells[1])] = true
		}
	}
	for id := range want {
		if !rows[id] {
			t.Errorf("Markdown has no row %s:\n%s", id, md)
		}
	}
	if !strings.Contains(md, "missed targets:") {
		t.Errorf("Markdown has no summary of missed targets")
	}
}
