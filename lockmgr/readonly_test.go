package lockmgr

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"scanlockfs/internal/testutil"
)

// TestReadOnlyChangesNothing: a read-only manager creates no lock
// directory, purges nothing and takes no lock, but still reports the
// holders of other processes.
func TestReadOnlyChangesNothing(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithReadOnly(true), WithStaleCleanup(true), WithInfoDelay(0))
	if exists(filepath.Join(root, LockDirName)) {
		t.Fatal("a read-only manager created the lock directory")
	}
	if _, err := m.Acquire(context.Background(), "s1", Shared, testOwner("a")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Acquire = %v, want ErrReadOnly", err)
	}
	if _, err := m.TryAcquire("s1", Exclusive, testOwner("a")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("TryAcquire = %v, want ErrReadOnly", err)
	}
	if exists(filepath.Join(root, LockDirName)) {
		t.Fatal("a refused Acquire created the lock directory")
	}
	st, err := m.Status("s1")
	if err != nil || st.State != "free" {
		t.Errorf("Status without a lock directory = %+v, %v; want free", st, err)
	}

	// A stale lock file and a held one: both stay, and the holder shows.
	h := startHelper(t, root, "infodelay=0")
	h.ok("acquire s2 exclusive 0")
	stale := filepath.Join(root, LockDirName, "old.lock")
	if err := os.WriteFile(stale, nil, 0o664); err != nil {
		t.Fatal(err)
	}
	before := testutil.TreeSnapshot(t, root)
	r := newManager(t, root, WithReadOnly(true), WithStaleCleanup(true))
	if _, err := r.PurgeStale(false); !errors.Is(err, ErrReadOnly) {
		t.Errorf("PurgeStale(false) = %v, want ErrReadOnly", err)
	}
	if would, err := r.PurgeStale(true); err != nil || !slices.Contains(would, stale) || slices.ContainsFunc(would, isS2) {
		t.Errorf("PurgeStale(true) = %v, %v; want %s and nothing of s2", would, err, stale)
	}
	if st, err := r.Status("s2"); err != nil || st.State != "exclusive" {
		t.Errorf("Status of a held scan = %+v, %v; want exclusive", st, err)
	}
	if after := testutil.TreeSnapshot(t, root); after != before {
		t.Errorf("a read-only manager changed the tree:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// What is in the way of a lock directory is reported, not replaced.
	blocked := t.TempDir()
	if err := os.WriteFile(filepath.Join(blocked, LockDirName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if m, err := New(blocked, WithReadOnly(true)); !errors.Is(err, ErrLockFile) {
		if m != nil {
			m.Close()
		}
		t.Errorf("New on a root whose .locks is a file = %v, want ErrLockFile", err)
	}
}

// TestReadOnlyAsUserWithoutWriteAccess runs the helper as user nobody on
// a tree it can only read, while this process holds a scan: the plain
// manager is refused (ErrRoot), the read-only one opens, shows the holder
// and refuses to lock, and nothing on disk changes.
func TestReadOnlyAsUserWithoutWriteAccess(t *testing.T) {
	testutil.RequireRoot(t, "to start a process as another user")
	// t.TempDir's parents are 0700: nobody could not reach the tree.
	base, err := os.MkdirTemp("", "lockmgr-ro-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	root := filepath.Join(base, "db")
	for _, d := range []string{base, root, filepath.Join(root, "s1")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(base, "lockmgr.test")
	copyFile(t, os.Args[0], bin, 0o755)

	m := newManager(t, root, WithInfoDelay(0))
	l, err := m.Acquire(context.Background(), "s1", Exclusive, testOwner("w"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	before := testutil.TreeSnapshot(t, root)

	p := startNobody(t, bin, root, "")
	if line := p.recv(); !strings.HasPrefix(line, "err new ") || !strings.Contains(line, "not writable") {
		t.Fatalf("plain manager as nobody: %q, want an ErrRoot refusal", line)
	}
	p = startNobody(t, bin, root, "readonly=1")
	if line := p.recv(); !strings.HasPrefix(line, "ready ") {
		t.Fatalf("read-only manager as nobody did not start: %q", line)
	}
	var st ScanStatus
	p.okJSON(&st, "status s1")
	if st.State != "exclusive" || len(st.Holders) != 1 || st.Holders[0].PID != os.Getpid() {
		t.Errorf("status as nobody = %+v, want held exclusive by pid %d", st, os.Getpid())
	}
	if k := p.fails("try s1 shared"); k != "readonly" {
		t.Errorf("try as nobody: %s, want readonly", k)
	}
	p.stop()
	if after := testutil.TreeSnapshot(t, root); after != before {
		t.Errorf("the tree changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// startNobody starts the helper binary bin as user nobody (65534).
func startNobody(t *testing.T, bin, root, opts string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperRootEnv+"="+root, helperOptsEnv+"="+opts,
		"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0", "HOME=/")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return startProc(t, "nobody", cmd)
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func isS2(p string) bool { return strings.HasPrefix(filepath.Base(p), "s2.") }
