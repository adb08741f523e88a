package leakcheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
)

// The checks find a descriptor, a flock, a duplicated lock file and a
// non-zero holders gauge that were not there at the baseline, and find
// nothing once they are gone.
func TestLeaksFindsWhatWasLeftOpen(t *testing.T) {
	dir := t.TempDir()
	lockDir := filepath.Join(dir, ".locks")
	testutil.Must(t, os.Mkdir(lockDir, 0o755))
	metrics := filepath.Join(dir, "metrics")
	write := func(s string) {
		testutil.Must(t, os.WriteFile(metrics, []byte(s), 0o644))
	}
	write("# TYPE scan_holders gauge\nscan_holders{mode=\"shared\"} 0\nscan_holders{mode=\"exclusive\"} 0\ngo_goroutines 10\nscan_waiters_total 3\n")
	lock := filepath.Join(lockDir, "s.lock")
	testutil.Must(t, os.WriteFile(lock, nil, 0o644))
	cached, err := os.Open(lock) // lockmgr's cached descriptor: fine
	if err != nil {
		t.Fatal(err)
	}
	defer cached.Close()
	base, err := Take(os.Getpid(), lockDir, metrics)
	if err != nil {
		t.Fatal(err)
	}
	if got := Leaks(base, base); len(got) != 0 {
		t.Fatalf("baseline against itself: %v", got)
	}

	leaked, err := os.Open(filepath.Join(dir, "metrics"))
	if err != nil {
		t.Fatal(err)
	}
	dup, err := os.Open(lock)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Must(t, unix.Flock(int(dup.Fd()), unix.LOCK_SH))
	write("scan_holders{mode=\"shared\"} 1\ngo_goroutines 100\nscan_waiters_total 9\n")
	cur, err := Take(os.Getpid(), lockDir, metrics)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(Leaks(base, cur), "\n")
	for _, want := range []string{"flock", "descriptor(s) on " + metrics, "2 descriptors on lock file " + lock, "scan_holders = 1", "go_goroutines = 100"} {
		if !strings.Contains(got, want) {
			t.Errorf("leaks lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "waiters_total") {
		t.Errorf("a counter was taken for a gauge:\n%s", got)
	}

	leaked.Close()
	dup.Close()
	write("scan_holders 0\ngo_goroutines 11\n")
	cur, err = Take(os.Getpid(), lockDir, metrics)
	if err != nil {
		t.Fatal(err)
	}
	if got := Leaks(base, cur); len(got) != 0 {
		t.Fatalf("after closing everything: %v", got)
	}
}

// go-fuse's splice pool keeps pipe pairs (both ends in the process) and
// one /dev/null: tolerated within the pool's bound; a lone pipe end, a
// second extra /dev/null or more pairs than the pool keeps are not.
func TestLeaksToleratesSplicePool(t *testing.T) {
	base, err := Take(os.Getpid(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	pair := func() {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, r, w)
	}
	for range MaxSplicePairs() {
		pair()
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, null)
	cur, err := Take(os.Getpid(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := Leaks(base, cur); len(got) != 0 {
		t.Fatalf("a full splice pool and its /dev/null: %v", got)
	}

	pair()
	null2, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, null2)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	files = append(files, r)
	cur, err = Take(os.Getpid(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(Leaks(base, cur), "\n")
	for _, want := range []string{"new pipe pairs", "on /dev/null", "1 descriptor(s) on pipe:"} {
		if !strings.Contains(got, want) {
			t.Errorf("leaks lack %q:\n%s", want, got)
		}
	}
}

// fusefs keeps a pidfd per client process: tolerated, also for a process
// that is gone, but not two for one process.
func TestLeaksToleratesPidfdCache(t *testing.T) {
	base, err := Take(os.Getpid(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("true")
	testutil.Must(t, child.Start())
	dead, err := unix.PidfdOpen(child.Process.Pid, 0)
	if err != nil {
		t.Skipf("pidfd_open: %v", err)
	}
	defer unix.Close(dead)
	testutil.Must(t, child.Wait())
	self, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(self)
	cur, err := Take(os.Getpid(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := Leaks(base, cur); len(got) != 0 {
		t.Fatalf("a pidfd for a live and one for a dead process: %v", got)
	}
	if !slices.Contains(cur.Pidfds, -1) || !slices.Contains(cur.Pidfds, os.Getpid()) {
		t.Fatalf("pidfds read as %v", cur.Pidfds)
	}
	again, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(again)
	cur, err = Take(os.Getpid(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(Leaks(base, cur), "\n"); !strings.Contains(got, "two pidfds") {
		t.Fatalf("two pidfds for one process not reported: %q", got)
	}
}
