package tests

import (
	"os"
	"path/filepath"
	"testing"
)

// Requests and what the daemon keeps for them, from .locks/metrics.

// A directory keeps one descriptor for the lookups in it (so that a
// READDIRPLUS of it is one statx per entry) until the kernel forgets it:
// removing it through the mount gives the descriptor back.
func TestRequestsDirFDKeptUntilForget(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	dir := d.path("scanA/sub")
	must(t, os.Mkdir(dir, 0o755))
	for _, name := range []string{"a", "b", "c"} {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644))
	}
	run(t, "ls", "-l", dir)
	kept := metricValue(t, d.metrics(t), "scanlockfs_dir_fds")
	if kept < 2 { // scanA, for the lookup of sub; sub, for its files
		t.Fatalf("%v directory descriptors kept after lookups in scanA and scanA/sub, want 2 or more", kept)
	}
	must(t, os.RemoveAll(dir))
	d.waitMetric(t, kept-1, "scanlockfs_dir_fds")
}

// requestCounts reads the FUSE request counters of ops.
func (d *daemon) requestCounts(t *testing.T, ops ...string) map[string]float64 {
	t.Helper()
	fams := d.metrics(t)
	m := map[string]float64{}
	for _, op := range ops {
		m[op] = metricValue(t, fams, "scanlockfs_fuse_requests_total", "op", op)
	}
	return m
}

// Requests that the kernel's caches and the open flags save: no FLUSH
// on close(2) at all; for a path and attributes the kernel has cached, no
// LOOKUP for an open, and no LOOKUP, GETATTR or STATX for a repeated stat
// (ls -l: stat(1) asks for the birth time, which the kernel never caches).
// The counters may move only by what reading the metrics itself costs,
// measured by two reads in a row.
func TestRequestsSavedByCaches(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--entry-timeout", "1h", "--attr-timeout", "1h")
	f := d.path("scanA/files.json")
	ops := []string{"FLUSH", "LOOKUP", "GETATTR", "STATX"}
	run(t, "cat", f)
	run(t, "ls", "-l", f)
	// A read asks for the access time again at the next stat, the
	// metrics' reads too: the first read of the metrics is not yet the
	// cost of the others.
	d.requestCounts(t, ops...)
	a := d.requestCounts(t, ops...)
	b := d.requestCounts(t, ops...)
	moved := func(what string, before, after map[string]float64, ops ...string) {
		t.Helper()
		for _, op := range ops {
			if n := after[op] - before[op] - (b[op] - a[op]); n != 0 {
				t.Errorf("%s: %v %s requests, want none (reading the metrics costs %v)", what, n, op, b[op]-a[op])
			}
		}
	}
	for range 3 {
		run(t, "ls", "-l", f)
	}
	c := d.requestCounts(t, ops...)
	moved("ls -l of a cached file", b, c, ops...)
	for range 3 {
		run(t, "cat", f)
	}
	e := d.requestCounts(t, ops...)
	moved("cat of a cached file", c, e, "FLUSH", "LOOKUP")
	// An append changes the attributes (they are asked again), not the
	// path.
	run(t, "sh", "-c", "echo more >> "+f)
	g := d.requestCounts(t, ops...)
	moved("append to a cached file", e, g, "FLUSH", "LOOKUP")
	if g["FLUSH"] != 0 {
		t.Errorf("%v FLUSH requests, want none", g["FLUSH"])
	}
}
