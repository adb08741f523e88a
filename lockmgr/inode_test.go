package lockmgr

import (
	"context"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"scanlockfs/internal/procfs"
)

// setOpenedHook runs f (once) between the open and the flock of a lock
// file, the window in which another process can unlink or replace it.
func setOpenedHook(t *testing.T, f func(path string)) {
	t.Helper()
	done := false
	testHookOpened = func(path string) {
		if !done {
			done = true
			f(path)
		}
	}
	t.Cleanup(func() { testHookOpened = nil })
}

// TestLockFileReplacedBeforeFlock: when the lock file is unlinked or
// replaced between our open and our flock, the lock we get is on a file
// nobody else will ever lock; we must notice and lock what the path names.
func TestLockFileReplacedBeforeFlock(t *testing.T) {
	for _, how := range []string{"unlinked", "replaced"} {
		t.Run(how, func(t *testing.T) {
			root := t.TempDir()
			m := newManager(t, root, WithInfoFiles(false))
			h := startHelper(t, root, "")
			setOpenedHook(t, func(path string) {
				if how == "unlinked" {
					os.Remove(path)
					return
				}
				tmp := path + ".new"
				if err := os.WriteFile(tmp, nil, 0o664); err != nil {
					t.Error(err)
				}
				if err := os.Rename(tmp, path); err != nil {
					t.Error(err)
				}
			})
			l, err := m.Acquire(context.Background(), "s", Exclusive, testOwner("a"))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
			path := filepath.Join(root, ".locks", "s.lock")
			if got := flockHolders(t, path); got[os.Getpid()] != Exclusive {
				t.Fatalf("the file %s names is locked by %v, not by us: we locked the old one", path, got)
			}
			if k := h.fails("try s shared"); k != "wouldblock" {
				t.Errorf("another process got %s while we hold the lock", k)
			}
			if n := m.Stats().Replaced; n != 1 {
				t.Errorf("Stats.Replaced = %d, want 1", n)
			}
		})
	}
}

// TestIdleDescriptorSurvivesPurge: a scan this process used keeps its lock
// file open; another process's stale clean-up may unlink it meanwhile,
// and our next acquisition must lock the new file, not the orphan.
func TestIdleDescriptorSurvivesPurge(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithInfoFiles(false))
	mustRelease(t, mustAcquire(t, m, "s", Exclusive, testOwner("a")))
	path := filepath.Join(root, ".locks", "s.lock")
	old := inode(t, path)

	h := startHelper(t, root, "")
	var removed []string
	h.okJSON(&removed, "purge real")
	if len(removed) != 1 || !strings.HasSuffix(removed[0], "s.lock") {
		t.Fatalf("the helper's purge removed %v, want s.lock", removed)
	}
	// Another process creates the new lock file and holds it.
	h.ok("try s exclusive")
	if inode(t, path) == old {
		t.Skip("the file system reused the inode number; cannot tell the files apart")
	}
	if _, err := m.TryAcquire("s", Shared, testOwner("a")); err == nil {
		t.Fatal("got the lock while another process holds the new lock file: we locked the orphan")
	}
	h.ok("release s")
	l := mustAcquire(t, m, "s", Exclusive, testOwner("a"))
	defer l.Release()
	if got := flockHolders(t, path); got[os.Getpid()] != Exclusive {
		t.Fatalf("the current lock file is held by %v, not by us", got)
	}
}

// TestPlantdbReleaseWindow: plantdb releases with LOCK_UN, close, unlink.
// If we take the flock in between, the file loses its name under us and
// the next plantdb acquisition locks a new file. We must see the plantdb
// .info still naming its releasing writer, wait, and lock the new file.
// "cached": the lock file is one this process created and keeps open.
func TestPlantdbReleaseWindow(t *testing.T) {
	for _, c := range []struct {
		mode   Mode
		cached bool
	}{{Exclusive, false}, {Shared, false}, {Exclusive, true}, {Shared, true}} {
		mode := c.mode
		t.Run(mode.String()+map[bool]string{false: "", true: "/cached"}[c.cached], func(t *testing.T) {
			root := t.TempDir()
			m := newManager(t, root, WithInfoFiles(false))
			if c.cached {
				warm(t, m, "s")
			}
			path := filepath.Join(root, ".locks", "s.lock")
			// The peer pauses 300 ms between its close and its unlink.
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
			// A shared request may hold it exclusively: plantdb was seen
			// on the scan (foreign.go).
			if got := flockHolders(t, path); got[os.Getpid()] < mode {
				t.Fatalf("after the peer's release the lock file is held by %v, not by us", got)
			}
			// So a second plantdb process is excluded (shared readers may
			// share with our reader).
			other := startPeer(t, "hold", root, "s", "--mode", "exclusive", "--timeout", "0.25")
			if line := other.recv(); line != "timeout" {
				t.Fatalf("a plantdb writer got %q while we hold the scan %v", line, mode)
			}
		})
	}
}

// TestLostLockFileIsReported: a lock file replaced while we hold it by
// a file another holder has locked already (which only a process outside
// the protocol does) is reported on release: exclusion may have been
// broken.
func TestLostLockFileIsReported(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithInfoFiles(false))
	l := mustAcquire(t, m, "s", Exclusive, testOwner("a"))
	lock := filepath.Join(root, ".locks", "s.lock")
	other, err := os.Create(lock + ".new")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(lock+".new", lock); err != nil {
		t.Fatal(err)
	}
	mustRelease(t, l)
	if n := m.Stats().LostLockFiles; n != 1 {
		t.Errorf("LostLockFiles = %d, want 1", n)
	}
	// And the next acquisition locks the file now named s.lock.
	other.Close()
	start := time.Now()
	l = mustAcquire(t, m, "s", Exclusive, testOwner("a"))
	defer l.Release()
	if got := flockHolders(t, lock); got[os.Getpid()] != Exclusive {
		t.Fatalf("lock file held by %v (after %v)", got, time.Since(start))
	}
}

// TestLostNameIsGuarded: plantdb's release unlinks whatever s.lock
// names, also the file of our hold (a release we could not see coming).
// Our hold then takes the new s.lock at once, so that a plantdb attempt
// finds it locked until our release, and the release reports nothing
// lost. Exclusive: plantdb known on the scan. Shared: the hold of a
// process that did not know plantdb yet (LOCK_SH), which a plantdb reader
// may share before it unlinks the file.
func TestLostNameIsGuarded(t *testing.T) {
	for _, mode := range []Mode{Exclusive, Shared} {
		t.Run(mode.String(), func(t *testing.T) {
			root := t.TempDir()
			m := newManager(t, root, WithInfoFiles(false))
			if mode == Exclusive {
				// Exclusive holds are guarded where plantdb is known: our
				// reader meets a plantdb reader (its S.info).
				p := peerHold(t, root, "s", "shared")
				if _, err := m.TryAcquire("s", Shared, testOwner("r")); !isWouldBlock(err) {
					t.Fatalf("TryAcquire next to a plantdb reader: %v, want ErrWouldBlock", err)
				}
				peerRelease(t, p)
			}
			l := mustAcquire(t, m, "s", mode, testOwner("a"))
			lock := filepath.Join(root, ".locks", "s.lock")
			if err := os.Remove(lock); err != nil { // plantdb's release
				t.Fatal(err)
			}
			// (The new file may get the old one's inode number.)
			waitFor(t, "a new s.lock", func() bool { return exists(lock) })
			w := startPeer(t, "hold", root, "s", "--mode", "exclusive", "--retry-sleep", "0.01", "--timeout", "0.3")
			if line := w.recv(); line != "timeout" {
				t.Fatalf("a plantdb writer got %q while our %v hold lasts", line, mode)
			}
			mustRelease(t, l)
			if n := m.Stats().LostLockFiles; n != 0 {
				t.Errorf("LostLockFiles = %d, want 0: the new lock file was held in time", n)
			}
			peerRelease(t, peerHold(t, root, "s", "exclusive"))
		})
	}
}

// openLockFiles counts this process's descriptors open on files in dir.
func openLockFiles(t *testing.T, dir string) int {
	t.Helper()
	fds, err := procfs.ReadFDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if strings.HasPrefix(fd.Link(), dir+"/") {
			n++
		}
	}
	return n
}

// TestIdleDescriptorsBounded: lock files of idle scans stay open, but
// only for the most recent maxIdleScans of them, and Close closes all.
func TestIdleDescriptorsBounded(t *testing.T) {
	root := t.TempDir()
	m, err := New(root, WithInfoFiles(false))
	if err != nil {
		t.Fatal(err)
	}
	dir := m.LockDir()
	for i := range 3 * maxIdleScans {
		mustRelease(t, mustAcquire(t, m, "scan"+strconv.Itoa(i), Mode(1+i%2), testOwner("a")))
	}
	if n := openLockFiles(t, dir); n == 0 || n > maxIdleScans {
		t.Errorf("%d lock files open after using %d scans, want 1..%d", n, 3*maxIdleScans, maxIdleScans)
	}
	held := mustAcquire(t, m, "held", Shared, testOwner("a"))
	m.Close()
	if err := held.Release(); err == nil {
		t.Error("Release after Close succeeded")
	}
	if n := openLockFiles(t, dir); n != 0 {
		t.Errorf("%d lock files still open after Close", n)
	}
}
