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
