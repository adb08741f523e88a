package lockmgr

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newManager opens a Manager on root (a fresh directory if empty) and
// closes it when the test ends.
func newManager(t testing.TB, root string, opts ...Option) *Manager {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	m, err := New(root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func testOwner(key string) Owner { return Owner{User: "tester", Key: key} }

// waitFor polls cond until it holds, failing the test after 10 s. It
// observes state (a queued waiter, a file appearing); it never stands in
// for a synchronisation.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// queued reports how many requests of this process wait for scan id.
func queued(t testing.TB, m *Manager, id string) int {
	t.Helper()
	return waitersAt(t, m, id, WhereLocal)
}

// waitersAt counts the waiters for scan id that m sees at where.
func waitersAt(t testing.TB, m *Manager, id, where string) int {
	t.Helper()
	st, err := m.Status(id)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, w := range st.Waiters {
		if w.Where == where {
			n++
		}
	}
	return n
}

// flockHolders returns the PIDs holding a flock on the file path names
// now, from /proc/locks, with their modes.
func flockHolders(t testing.TB, path string) map[int]Mode {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	locks, err := readProcLocks()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]Mode{}
	for _, pl := range locks {
		if pl.kind == "FLOCK" && !pl.blocked && pl.file == (fileID{dev: st.Dev, ino: st.Ino}) {
			out[pl.pid] = pl.mode
		}
	}
	return out
}

func inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func mustContain(t testing.TB, err error, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("error %v should mention %q", err, p)
		}
	}
}

// acquireReleased runs Acquire in a goroutine; the channel gets its error or,
// once granted, the error of releasing the lease at once.
func acquireReleased(ctx context.Context, m *Manager, scan string, mode Mode, o Owner, opts ...AcquireOption) <-chan error {
	ch := make(chan error, 1)
	go func() {
		l, err := m.Acquire(ctx, scan, mode, o, opts...)
		if err == nil {
			err = l.Release()
		}
		ch <- err
	}()
	return ch
}
