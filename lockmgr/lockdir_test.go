package lockmgr

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
)

// The lock directory is writable by every user of the scan tree, and
// the manager usually runs as root: what those users plant there must
// never make it follow a link, block, open a device, read without bound,
// merge two scans, or remove a file that is not a lock file.

// within runs f and fails the test if it does not return in time: the
// bugs these tests catch block for ever.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

// watchOpens reports opens of path (inotify IN_OPEN): an open with
// O_PATH does not count, a real one does.
func watchOpens(t *testing.T, path string) func() bool {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	return func() bool {
		buf := make([]byte, 4096)
		n, _ := unix.Read(fd, buf)
		return n > 0
	}
}

// A symbolic link as the lock directory is refused by New, read-only or
// not, and nothing in the directory it points to is removed or created.
func TestNewRefusesSymlinkedLockDir(t *testing.T) {
	root := t.TempDir()
	elsewhere := t.TempDir()
	files := map[string]string{"Cargo.lock": "[package]\n", "yarn.lock": "", "x.info": `{"pid": 1}`}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(elsewhere, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lockDir := filepath.Join(root, LockDirName)
	if err := os.Symlink(elsewhere, lockDir); err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]Option{nil, {WithReadOnly(true)}, {WithLockDir(lockDir)}} {
		m, err := New(root, opts...)
		if err == nil {
			m.Close()
			t.Fatalf("New with %d options accepted a symbolic link as lock directory", len(opts))
		}
		if !errors.Is(err, ErrLockFile) {
			t.Errorf("error %v is not ErrLockFile", err)
		}
		mustContain(t, err, lockDir, "symbolic link", "replace it with a real directory")
	}
	entries, err := os.ReadDir(elsewhere)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(files) {
		t.Errorf("the directory the link points to changed: %v", entries)
	}
	for name, content := range files {
		if b, err := os.ReadFile(filepath.Join(elsewhere, name)); err != nil || string(b) != content {
			t.Errorf("%s changed: %q, %v", name, b, err)
		}
	}
}

// A lock directory swapped for a symbolic link while the manager runs
// is not followed either: the next acquisition fails, naming it, whether
// the scan's lock file was never opened or is still open from an earlier
// use (the check after the flock sees that its name is gone).
func TestSymlinkSwappedInAfterNew(t *testing.T) {
	for _, cached := range []bool{false, true} {
		t.Run(map[bool]string{false: "new", true: "cached"}[cached], func(t *testing.T) {
			root := t.TempDir()
			m := newManager(t, root)
			if cached {
				warm(t, m, "s")
			}
			elsewhere := t.TempDir()
			lockDir := filepath.Join(root, LockDirName)
			if err := os.Rename(lockDir, filepath.Join(root, "old")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(elsewhere, lockDir); err != nil {
				t.Fatal(err)
			}
			_, err := m.TryAcquire("s", Exclusive, testOwner("a"))
			if !errors.Is(err, ErrLockFile) {
				t.Fatalf("acquire through a symlinked lock directory: %v, want ErrLockFile", err)
			}
			mustContain(t, err, lockDir, "symbolic link")
			if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
				t.Errorf("files created through the link: %v", entries)
			}
		})
	}
}

// Files of the wrong kind where a lock file should be: refused at once
// with ErrLockFile naming the path and the kind, without opening them for
// real (a FIFO would block, a device would act).
func TestLockFileOfWrongKind(t *testing.T) {
	testutil.RequireRoot(t, "mknod of a device")
	root := t.TempDir()
	m := newManager(t, root)
	dir := m.LockDir()
	other := filepath.Join(dir, "other.lock")
	if err := os.WriteFile(other, nil, 0o664); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, nil, 0o664); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id, kind string
		make     func(p string) error
	}{
		{"fifo", "FIFO", func(p string) error { return unix.Mkfifo(p, 0o664) }},
		{"dev", "character device", func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) }},
		{"sock", "socket", func(p string) error { return unix.Mknod(p, unix.S_IFSOCK|0o666, 0) }},
		{"link", "symbolic link", func(p string) error { return os.Symlink(target, p) }},
		{"hard", "hard links", func(p string) error { return os.Link(other, p) }},
		{"dir", "is a directory", func(p string) error { return os.Mkdir(p, 0o755) }},
	} {
		p := filepath.Join(dir, c.id+".lock")
		if err := c.make(p); err != nil {
			t.Fatal(err)
		}
		opened := func() bool { return false }
		if c.id != "link" && c.id != "sock" {
			opened = watchOpens(t, p)
		}
		var err error
		within(t, "acquire on a "+c.kind, func() {
			_, err = m.Acquire(context.Background(), c.id, Exclusive, testOwner("a"))
		})
		if !errors.Is(err, ErrLockFile) {
			t.Errorf("%s: %v, want ErrLockFile", c.id, err)
		}
		mustContain(t, err, p, c.kind)
		if opened() {
			t.Errorf("%s: the %s was opened", c.id, c.kind)
		}
		st, _ := m.Status(c.id)
		if st == nil || !strings.Contains(st.LockError, p) || !strings.Contains(st.LockError, c.kind) {
			t.Errorf("%s: status does not say why nobody can lock it: %+v", c.id, st)
		}
	}
	// The hard link's other name still works for its own scan.
	l, err := m.TryAcquire("other", Exclusive, testOwner("a"))
	if err == nil {
		mustRelease(t, l)
	}
	if b, _ := os.ReadFile(target); len(b) != 0 {
		t.Errorf("the symlink's target was written: %q", b)
	}
}

// .info files of the wrong kind or size: reading them neither blocks
// (FIFO), nor follows a link (to /dev/zero: endless), nor reads without
// bound; status says what is wrong, and acquisitions are not delayed.
func TestInfoFileOfWrongKind(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithInfoDelay(0))
	dir := m.LockDir()
	if err := unix.Mkfifo(filepath.Join(dir, "fifo.info"), 0o664); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero.info")); err != nil {
		t.Fatal(err)
	}
	big := append([]byte(`{"scan_id":"big","note":"`), bytes.Repeat([]byte("x"), 10<<20)...)
	big = append(big, `"}`...)
	if err := os.WriteFile(filepath.Join(dir, "big.info"), big, 0o664); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ id, why string }{
		{"fifo", "FIFO"}, {"zero", "symbolic link"}, {"big", "larger than any lock info"},
	} {
		var st *ScanStatus
		var err error
		within(t, "status of "+c.id, func() { st, err = m.Status(c.id) })
		if err != nil || !strings.Contains(st.InfoError, c.why) || !strings.Contains(st.InfoError, filepath.Join(dir, c.id+".info")) {
			t.Errorf("status of %s: %v, info error %q, want one naming the file and %q", c.id, err, st.InfoError, c.why)
		}
		within(t, "acquire of "+c.id, func() {
			var l *Lease
			if l, err = m.Acquire(context.Background(), c.id, Shared, testOwner("a")); err == nil {
				mustRelease(t, l)
			}
		})
		if err != nil {
			t.Errorf("acquire of %s: %v", c.id, err)
		}
	}
}

// The stale clean-up removes only what looks like ours or plantdb's, and
// never through a symbolic link.
func TestPurgeLeavesForeignFiles(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithStaleCleanup(false))
	dir := m.LockDir()
	outside := filepath.Join(t.TempDir(), "precious.info")
	if err := os.WriteFile(outside, []byte(`{"scan_id":"x","pid":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o664); err != nil {
			t.Fatal(err)
		}
	}
	dead := deadPID(t)
	// Stale and ours: removed.
	write("stale.lock", "")
	write("stale.info", `{"scan_id":"stale","pid":1}`)
	write("stale.gate", "")
	write("torn.info", `{"scan_id": "torn", "lock_ty`)
	// Not ours: kept.
	write("data.lock", "this lock file holds data\n")
	write("kept.lock", "")
	write("kept.info", "not JSON at all")
	write("kept.gate", "gate with data")
	write("text.info", "hello")
	if err := os.Symlink(outside, filepath.Join(dir, "link.info")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo.info"), 0o664); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, ".info-tmp-"+strconv.Itoa(dead)+"-1")); err != nil {
		t.Fatal(err)
	}
	var removed []string
	var err error
	within(t, "purge", func() { removed, err = m.PurgeStale(false) })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range removed {
		got = append(got, filepath.Base(p))
	}
	want := []string{"stale.gate", "stale.info", "stale.lock", "torn.info", "kept.lock"}
	for _, w := range want {
		if exists(filepath.Join(dir, w)) {
			t.Errorf("%s survived", w)
		}
	}
	for _, k := range []string{"data.lock", "kept.info", "kept.gate", "text.info", "link.info", "fifo.info", ".info-tmp-" + strconv.Itoa(dead) + "-1"} {
		if !exists(filepath.Join(dir, k)) {
			t.Errorf("%s, not ours, was removed (removed: %v)", k, got)
		}
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != `{"scan_id":"x","pid":1}` {
		t.Errorf("the file outside the lock directory changed: %q, %v", b, err)
	}
}
