package lockmgr

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
)

func TestNewRejectsUnusableRoots(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	testutil.Must(t, os.WriteFile(file, nil, 0o644))
	blocked := filepath.Join(dir, "blocked")
	testutil.Must(t, os.Mkdir(blocked, 0o755))
	// A file where the lock directory should be.
	testutil.Must(t, os.WriteFile(filepath.Join(blocked, LockDirName), nil, 0o644))
	tests := []struct {
		name string
		root string
		opts []Option
		want error
		says []string
	}{
		{"missing", filepath.Join(dir, "nope"), nil, ErrRoot, []string{"nope", "existing"}},
		{"file", file, nil, ErrRoot, []string{file, "not a directory"}},
		{"lock dir is a file", blocked, nil, ErrLockFile, []string{LockDirName, "not a directory"}},
		{"lock dir parent missing", dir, []Option{WithLockDir(filepath.Join(dir, "x", "y"))}, ErrLockFile, []string{"cannot create"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.root, tt.opts...)
			if !errors.Is(err, tt.want) {
				if m != nil {
					m.Close()
				}
				t.Fatalf("New(%s) = %v, want %v", tt.root, err, tt.want)
			}
			mustContain(t, err, tt.says...)
		})
	}
}

// readOnlyDir returns a directory this process cannot write to: a
// chmod-ed one for ordinary users, a read-only tmpfs for root (whom
// permission bits do not stop).
func readOnlyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		testutil.Must(t, os.Chmod(dir, 0o555))
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
		return dir
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY, "size=64k"); err != nil {
		t.Skipf("running as root without the right to mount a read-only tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func TestNewRejectsUnwritableRoot(t *testing.T) {
	dir := readOnlyDir(t)
	m, err := New(dir)
	if !errors.Is(err, ErrRoot) {
		if m != nil {
			m.Close()
		}
		t.Fatalf("New on a read-only root = %v, want ErrRoot", err)
	}
	mustContain(t, err, dir, "not writable")
}

// TestLockFileModesIgnoreUmask: other users of the scan tree (plantdb
// opens lock files O_WRONLY) must be able to use what we create, whatever
// our umask.
func TestLockFileModesIgnoreUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	root := t.TempDir()
	m := newManager(t, root, WithInfoDelay(0))
	for _, mode := range []Mode{Shared, Exclusive} {
		l, err := m.Acquire(context.Background(), "s1", mode, testOwner("a"))
		if err != nil {
			t.Fatal(err)
		}
		checkMode(t, filepath.Join(root, ".locks"), os.ModeDir|os.ModeSetgid|0o775)
		checkMode(t, filepath.Join(root, ".locks", "s1.lock"), 0o664)
		checkMode(t, filepath.Join(root, ".locks", "s1.info"), 0o664)
		l.Release()
	}
	// A lock file that another process of ours created with a narrower
	// mode is widened when we open it.
	p := filepath.Join(root, ".locks", "s2.lock")
	testutil.Must(t, os.WriteFile(p, nil, 0o600))
	l, err := m.Acquire(context.Background(), "s2", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	checkMode(t, p, 0o664)
}

func TestCustomModes(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(t.TempDir(), "locks")
	m := newManager(t, root, WithLockDir(dir), WithFileMode(0o660), WithDirMode(0o2770), WithInfoDelay(0))
	l, err := m.Acquire(context.Background(), "s1", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	checkMode(t, dir, os.ModeDir|os.ModeSetgid|0o770)
	checkMode(t, filepath.Join(dir, "s1.lock"), 0o660)
	checkMode(t, filepath.Join(dir, "s1.info"), 0o660)
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode() & (os.ModeType | os.ModePerm | os.ModeSetgid); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

func TestWithLockDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(t.TempDir(), "elsewhere")
	m := newManager(t, root, WithLockDir(dir), WithInfoDelay(0))
	if m.LockDir() != dir {
		t.Errorf("LockDir() = %s, want %s", m.LockDir(), dir)
	}
	l, err := m.Acquire(context.Background(), "s1", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if !exists(filepath.Join(dir, "s1.lock")) || !exists(filepath.Join(dir, "s1.info")) {
		t.Errorf("lock and info files are not in %s", dir)
	}
	if exists(filepath.Join(root, LockDirName)) {
		t.Errorf("%s/.locks was created although the lock directory is elsewhere", root)
	}
	// Another process using the same lock directory is excluded.
	h := startHelper(t, root, "lockdir="+dir)
	if k := h.fails("try s1 shared"); k != "wouldblock" {
		t.Errorf("helper on the same lock dir: %s, want wouldblock", k)
	}
}
