package lockmgr

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"scanlockfs/internal/procfs"
)

// openLockFileNames returns the lock files of dir this process has open.
func openLockFileNames(t *testing.T, dir string) map[string]bool {
	t.Helper()
	fds, err := procfs.ReadFDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	open := map[string]bool{}
	for _, fd := range fds {
		if target := fd.Link(); filepath.Dir(target) == dir {
			open[filepath.Base(target)] = true
		}
	}
	return open
}

// TestIdleLockFilesLRU: when more scans than the idle cache holds are idle, the
// lock file closed is the one used least recently, never one just used.
func TestIdleLockFilesLRU(t *testing.T) {
	m := newManager(t, t.TempDir(), WithInfoFiles(false))
	use := func(id string) { mustRelease(t, mustAcquire(t, m, id, Shared, testOwner("a"))) }
	for i := range m.back.maxIdle {
		use("scan" + strconv.Itoa(i))
	}
	use("scan0") // now the most recently used
	for i := range 4 {
		use("new" + strconv.Itoa(i)) // evicts scan1..scan4, the least recently used
		open := openLockFileNames(t, m.LockDir())
		if len(open) != m.back.maxIdle {
			t.Fatalf("%d lock files open, want %d", len(open), m.back.maxIdle)
		}
		if !open["scan0.lock"] || !open["new"+strconv.Itoa(i)+".lock"] {
			t.Fatalf("a recently used lock file was closed: scan0 %v, new%d %v", open["scan0.lock"], i, open["new"+strconv.Itoa(i)+".lock"])
		}
		for j := 1; j <= i+1; j++ {
			if open["scan"+strconv.Itoa(j)+".lock"] {
				t.Fatalf("scan%d, used least recently, is still open after %d evictions", j, i+1)
			}
		}
	}
}
