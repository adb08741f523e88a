package lockmgr

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The check after every flock looks the lock file up through the lock
// directory's entry in its parent (lockDir.nameStat), and the look at
// S.info is skipped while the lock file is quiet (plantdb.go). These
// tests use a lock file this process already has open and quiet: the
// state in which a cheaper check could miss what the whole path shows.

// warm uses scan s once, so that its lock file stays open (idle cache)
// and is quiet (this process created it).
func warm(t *testing.T, m *Manager, s string) {
	t.Helper()
	mustRelease(t, mustAcquire(t, m, s, Exclusive, testOwner("warm")))
	m.back.mu.Lock()
	f := m.back.files[s]
	m.back.mu.Unlock()
	if f == nil || f.fd < 0 || !f.quietNow() {
		t.Fatalf("scan %s: lock file not kept open and quiet after its first use", s)
	}
}

// TestLockDirReplacedWhileCached: the lock directory is replaced while
// this process keeps a lock file of it open. Other processes lock the
// files of the new directory, so must we: the old file protects nothing.
func TestLockDirReplacedWhileCached(t *testing.T) {
	for _, how := range []string{"renamed", "removed"} {
		t.Run(how, func(t *testing.T) {
			root := t.TempDir()
			m := newManager(t, root, WithInfoFiles(false))
			warm(t, m, "s")
			dir := m.LockDir()
			if how == "renamed" {
				if err := os.Rename(dir, filepath.Join(root, "old-locks")); err != nil {
					t.Fatal(err)
				}
			} else if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o775); err != nil {
				t.Fatal(err)
			}
			h := startHelper(t, root, "")
			l := mustAcquire(t, m, "s", Exclusive, testOwner("a"))
			defer l.Release()
			path := filepath.Join(dir, "s.lock")
			if got := flockHolders(t, path); got[os.Getpid()] != Exclusive {
				t.Fatalf("%s is held by %v, not by us: we locked the file of the old lock directory", path, got)
			}
			if k := h.fails("try s shared"); k != "wouldblock" {
				t.Errorf("another process got %s while we hold the scan", k)
			}
		})
	}
}

// TestSymlinkSwappedInWhileCached: a symbolic link swapped in for the
// lock directory while a lock file of it is open is refused at the next
// acquisition, as for a lock file not yet open (TestSymlinkSwappedInAfterNew).
func TestSymlinkSwappedInWhileCached(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithInfoFiles(false))
	warm(t, m, "s")
	elsewhere := t.TempDir()
	dir := m.LockDir()
	if err := os.Rename(dir, filepath.Join(root, "old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	_, err := m.TryAcquire("s", Exclusive, testOwner("a"))
	if !errors.Is(err, ErrLockFile) {
		t.Fatalf("acquire through a symlinked lock directory: %v, want ErrLockFile", err)
	}
	mustContain(t, err, dir, "symbolic link")
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("files created through the link: %v", entries)
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

// TestLockFileReplacedWhileCached: another process unlinks or replaces a
// quiet lock file this process keeps open; the next acquisition locks
// what the path names now.
func TestLockFileReplacedWhileCached(t *testing.T) {
	for _, how := range []string{"unlinked", "replaced"} {
		t.Run(how, func(t *testing.T) {
			root := t.TempDir()
			m := newManager(t, root, WithInfoFiles(false))
			warm(t, m, "s")
			path := filepath.Join(m.LockDir(), "s.lock")
			if how == "unlinked" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := os.WriteFile(path+".new", nil, 0o664); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(path+".new", path); err != nil {
					t.Fatal(err)
				}
			}
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

// TestPlantdbReleaseWindowWhileQuiet is TestPlantdbReleaseWindow on a
// lock file this process created and keeps open: plantdb's open changes
// its ctime, so the grant after plantdb's release looks at S.info, waits
// for plantdb's unlink and locks the new file.
func TestPlantdbReleaseWindowWhileQuiet(t *testing.T) {
	for _, mode := range []Mode{Exclusive, Shared} {
		t.Run(mode.String(), func(t *testing.T) {
			root := t.TempDir()
			m := newManager(t, root, WithInfoFiles(false))
			warm(t, m, "s")
			path := filepath.Join(m.LockDir(), "s.lock")
			peer := startPeer(t, "hold", root, "s", "--mode", "exclusive", "--release-pause", "0.3")
			if line := peer.recv(); !strings.HasPrefix(line, "granted ") {
				t.Fatalf("peer: %q", line)
			}
			w := goAcquire(t, m, context.Background(), "s", mode, testOwner("go"))
			peer.send("release")
			r := get(t, w)
			if r.err != nil {
				t.Fatal(r.err)
			}
			defer r.l.Release()
			<-peer.done // the peer has unlinked the lock file it held
			if got := flockHolders(t, path); got[os.Getpid()] < mode {
				t.Fatalf("after the peer's release the lock file is held by %v, not by us", got)
			}
			other := startPeer(t, "hold", root, "s", "--mode", "exclusive", "--timeout", "0.25")
			if line := other.recv(); line != "timeout" {
				t.Fatalf("a plantdb writer got %q while we hold the scan %v", line, mode)
			}
		})
	}
}
