package lockmgr

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// A gate left without its lock file (plantdb unlinked S.lock when it
// released the scan, or the scan was never created) is removed by the
// stale clean-up once no writer waits on it; a gate a writer waits on
// stays, with or without its lock file.
func TestPurgeRemovesOrphanGates(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithStaleCleanup(false))
	dir := m.LockDir()
	for _, name := range []string{"gone.gate", "waited.gate", "both.gate", "both.lock"} {
		must(t, os.WriteFile(dir+"/"+name, nil, 0o664))
	}
	// A writer of another open file description waits on waited.gate.
	g, err := unix.Open(dir+"/waited.gate", unix.O_RDWR|unix.O_CLOEXEC, 0)
	must(t, err)
	lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 1}
	must(t, unix.FcntlFlock(uintptr(g), unix.F_OFD_SETLK, &lk))

	removed, err := m.PurgeStale(false)
	must(t, err)
	for _, name := range []string{"gone.gate", "both.gate", "both.lock"} {
		if !slices.Contains(removed, dir+"/"+name) || exists(dir+"/"+name) {
			t.Errorf("%s: not removed (removed: %v)", name, removed)
		}
	}
	if !exists(dir + "/waited.gate") {
		t.Fatalf("the gate a writer waits on was removed")
	}
	unix.Close(g) // the writer stops waiting
	removed, err = m.PurgeStale(false)
	must(t, err)
	if !slices.Equal(removed, []string{dir + "/waited.gate"}) {
		t.Fatalf("after the writer stopped waiting: removed %v, want the gate", removed)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
