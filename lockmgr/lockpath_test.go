package lockmgr

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The check after every flock looks the lock file up through the lock
// directory's entry in its parent (lockDir.nameStat). These tests use a
// lock file this process already has open: the state in which a cheaper
// check could miss what the whole path shows.

// warm uses scan s once, so that its lock file stays open (idle cache).
func warm(t *testing.T, m *Manager, s string) {
	t.Helper()
	mustRelease(t, mustAcquire(t, m, s, Exclusive, testOwner("warm")))
	m.back.mu.Lock()
	f := m.back.files[s]
	m.back.mu.Unlock()
	if f == nil || f.fd < 0 {
		t.Fatalf("scan %s: lock file not kept open after its first use", s)
	}
}

// TestReplacedWhileCached: the lock directory or the lock file is
// replaced (or removed) while this process keeps the scan's lock file
// open. Other processes lock what the path names now, so must
// we: the old file protects nothing.
func TestReplacedWhileCached(t *testing.T) {
	for _, how := range []string{"dir renamed", "dir removed", "file unlinked", "file replaced"} {
		t.Run(how, func(t *testing.T) {
			root := t.TempDir()
			m := newManager(t, root, WithInfoFiles(false))
			warm(t, m, "s")
			dir := m.LockDir()
			path := filepath.Join(dir, "s.lock")
			replace(t, how, dir, path)
			h := startHelper(t, root, "")
			l := mustAcquire(t, m, "s", Exclusive, testOwner("a"))
			defer l.Release()
			if got := flockHolders(t, path); got[os.Getpid()] != Exclusive {
				t.Fatalf("%s is held by %v, not by us: we locked the file it named before", path, got)
			}
			if k := h.fails("try s shared"); k != "wouldblock" {
				t.Errorf("another process got %s while we hold the scan", k)
			}
		})
	}
}

// replace does to the lock directory dir or the lock file path what how
// says.
func replace(t *testing.T, how, dir, path string) {
	t.Helper()
	var err error
	switch how {
	case "dir renamed":
		err = os.Rename(dir, dir+".old")
	case "dir removed":
		err = os.RemoveAll(dir)
	case "file unlinked":
		err = os.Remove(path)
	case "file replaced":
		if err = os.WriteFile(path+".new", nil, 0o664); err == nil {
			err = os.Rename(path+".new", path)
		}
	}
	if err == nil && strings.HasPrefix(how, "dir") {
		err = os.Mkdir(dir, 0o775)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestScanRootReplacedWhileCached: an ancestor of the lock directory
// replaced (the scan root moved away and another put in its place) is
// noticed once the whole path is walked again (fullPathEvery; 0 here).
func TestScanRootReplacedWhileCached(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "db")
	if err := os.Mkdir(root, 0o775); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, root, WithInfoFiles(false))
	warm(t, m, "s")
	saved := fullPathEvery
	fullPathEvery = 0
	t.Cleanup(func() { fullPathEvery = saved })
	if err := os.Rename(root, filepath.Join(parent, "db.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, LockDirName), 0o775); err != nil {
		t.Fatal(err)
	}
	l := mustAcquire(t, m, "s", Exclusive, testOwner("a"))
	defer l.Release()
	path := filepath.Join(root, LockDirName, "s.lock")
	if got := flockHolders(t, path); got[os.Getpid()] != Exclusive {
		t.Fatalf("%s is held by %v, not by us: we locked the file of the old scan root", path, got)
	}
}
