package lockmgr

import (
	"slices"
	"strings"
	"testing"
)

// Processes that wait by polling are seen by other processes' Status as
// waiters, with their pid and mode, for as long as they wait: the record
// goes when a waiter is granted or dies. A request that does not wait
// records nothing (no S.wait file).
func TestWaitersOfOtherProcessesAreRecorded(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root)
	a, b := startHelper(t, root, ""), startHelper(t, root, "")
	a.ok("try free exclusive")
	a.ok("release free")
	if exists(m.LockDir() + "/free.wait") {
		t.Fatal("an uncontended request left a waiting record")
	}

	held := mustAcquire(t, m, "s", Exclusive, testOwner("holder"))
	a.send("acquire s shared 60000")
	b.send("acquire s exclusive 60000")
	waitFor(t, "both waiters seen", func() bool {
		w := recorded(t, m, "s")
		return slices.Contains(w, ProcessHold{a.pid, Shared}) && slices.Contains(w, ProcessHold{b.pid, Exclusive})
	})
	b.kill()
	waitFor(t, "the killed waiter gone", func() bool { return !slices.Contains(recorded(t, m, "s"), ProcessHold{b.pid, Exclusive}) })
	mustRelease(t, held)
	if f := strings.Fields(a.recv()); f[0] != "ok" {
		t.Fatalf("a's acquire: %v", f)
	}
	if w := recorded(t, m, "s"); len(w) != 0 {
		t.Fatalf("waiters after the grant: %v, want none", w)
	}

	// The stale clean-up keeps the record file while a waiter records in
	// it, and removes it once nobody does.
	c := startHelper(t, root, "")
	c.send("acquire s exclusive 60000")
	waitFor(t, "c waits", func() bool { return slices.Contains(recorded(t, m, "s"), ProcessHold{c.pid, Exclusive}) })
	wait := m.LockDir() + "/s.wait"
	if removed, err := m.PurgeStale(false); err != nil || slices.Contains(removed, wait) {
		t.Fatalf("clean-up while c waits: removed %v, %v; want s.wait kept", removed, err)
	}
	a.ok("release s")
	if f := strings.Fields(c.recv()); f[0] != "ok" {
		t.Fatalf("c's acquire: %v", f)
	}
	c.ok("release s")
	if removed, err := m.PurgeStale(false); err != nil || !slices.Contains(removed, wait) {
		t.Fatalf("clean-up after the waits: removed %v, %v; want s.wait", removed, err)
	}
}

// recorded returns the waiters of other processes that Status shows.
func recorded(t *testing.T, m *Manager, id string) []ProcessHold {
	t.Helper()
	st, err := m.Status(id)
	if err != nil {
		t.Fatal(err)
	}
	var out []ProcessHold
	for _, w := range st.Waiters {
		if w.Where == WhereProcess {
			out = append(out, ProcessHold{w.PID, w.Mode})
		}
	}
	return out
}
