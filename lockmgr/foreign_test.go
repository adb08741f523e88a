package lockmgr

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// The plantdb peer (internal/testpeer/plantdb_peer.py) follows plantdb's
// ScanLockManager, unlink on release included. These tests build
// plantdb's self-races deterministically and check that our holders
// never overlap a plantdb holder.

// peerHold starts a peer holding scan s of root in mode and returns it
// once granted.
func peerHold(t *testing.T, root, s, mode string, args ...string) *proc {
	t.Helper()
	p := startPeer(t, append([]string{"hold", root, s, "--mode", mode}, args...)...)
	if line := p.recv(); !strings.HasPrefix(line, "granted ") {
		t.Fatalf("peer %s: %q", mode, line)
	}
	return p
}

// peerRelease has a holding peer release and returns the time just
// before its release began.
func peerRelease(t *testing.T, p *proc) int64 {
	t.Helper()
	p.send("release")
	line := p.recv()
	ts, ok := strings.CutPrefix(line, "released ")
	if !ok {
		t.Fatalf("peer: %q", line)
	}
	at, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	<-p.done
	return at
}

// loggedManager is newManager with its log kept.
func loggedManager(t *testing.T, root string, opts ...Option) (*Manager, *memHook) {
	lg := logrus.New()
	lg.SetOutput(io.Discard)
	lg.SetLevel(logrus.DebugLevel)
	hook := &memHook{}
	lg.AddHook(hook)
	return newManager(t, root, append([]Option{WithLogger(lg), WithInfoFiles(false)}, opts...)...), hook
}

// TestOrphanedPlantdbReaderIsWaitedFor: two plantdb readers share the
// lock file; the first one's release unlinks it, so the second holds a
// file without a name. Our writer creates and locks a new file: it must
// still wait for the second reader, and the race is logged once, with its
// pid.
func TestOrphanedPlantdbReaderIsWaitedFor(t *testing.T) {
	root := t.TempDir()
	m, hook := loggedManager(t, root)
	a := peerHold(t, root, "s", "shared")
	b := peerHold(t, root, "s", "shared")
	peerRelease(t, a) // unlinks s.lock while b holds it
	if exists(filepath.Join(root, ".locks", "s.lock")) {
		t.Fatal("the peer's release left s.lock: it no longer follows plantdb")
	}
	waitsForOrphan(t, m, hook, b, Exclusive)
}

// TestOrphanedPlantdbWriterIsWaitedFor: a plantdb writer takes the flock
// in the window of another plantdb process's release (between its close
// and its unlink), which then unlinks the file under the writer. Our
// reader must wait for that writer; a try fails with ErrWouldBlock.
func TestOrphanedPlantdbWriterIsWaitedFor(t *testing.T) {
	root := t.TempDir()
	m, hook := loggedManager(t, root)
	a := peerHold(t, root, "s", "exclusive", "--release-pause", "0.5")
	// b polls every 10 ms, so it takes the lock in a's pause.
	lock := filepath.Join(root, ".locks", "s.lock")
	before := mtime(t, lock)
	b := startPeer(t, "hold", root, "s", "--mode", "exclusive", "--retry-sleep", "0.01")
	// plantdb's open truncates: a new modification time shows b trying.
	waitFor(t, "b's first attempt", func() bool { return mtime(t, lock) != before })
	peerRelease(t, a)
	if line := b.recv(); !strings.HasPrefix(line, "granted ") {
		t.Fatalf("peer b: %q", line)
	}
	waitFor(t, "a's unlink", func() bool { return !exists(lock) })
	if _, err := m.TryAcquire("s", Shared, testOwner("try")); !isWouldBlock(err) {
		t.Fatalf("TryAcquire while a plantdb writer holds the orphaned lock file: %v, want ErrWouldBlock", err)
	}
	waitsForOrphan(t, m, hook, b, Shared)
}

// TestPlantdbStalledBeforeItsFlockIsFenced: a plantdb process opens the
// lock file and stalls before its flock; another plantdb release unlinks
// the file meanwhile. /proc/locks shows nothing yet, so our grant on a new
// file goes through; the stalled process must then not be able to lock
// the orphan while we hold the scan (fence.go): its attempt fails and it
// polls the file named s.lock, which it gets once we released.
func TestPlantdbStalledBeforeItsFlockIsFenced(t *testing.T) {
	for _, c := range []struct {
		mode Mode
		peer string // the stalled plantdb process: one that conflicts with mode
	}{{Exclusive, "shared"}, {Shared, "exclusive"}} {
		mode := c.mode
		t.Run(mode.String(), func(t *testing.T) {
			root := t.TempDir()
			m, _ := loggedManager(t, root)
			lock := filepath.Join(root, ".locks", "s.lock")
			p := startPeer(t, "hold", root, "s", "--mode", c.peer, "--retry-sleep", "0.01", "--stall-first-open")
			if line := p.recv(); line != "opened" {
				t.Fatalf("peer: %q", line)
			}
			if err := os.Remove(lock); err != nil { // what another plantdb process's release does
				t.Fatal(err)
			}
			l := mustAcquire(t, m, "s", mode, testOwner("w"))
			created := mtime(t, lock)
			p.send("go")
			// plantdb's open truncates: a new modification time shows the
			// peer past its attempt on the orphan, polling the named file.
			waitFor(t, "the peer's next attempt", func() bool {
				select {
				case line := <-p.lines:
					t.Fatalf("the stalled plantdb %s said %q while our %v hold lasts", c.peer, line, mode)
				default:
				}
				return mtime(t, lock) != created
			})
			released := mono()
			l.Release()
			line := p.recv()
			ts, ok := strings.CutPrefix(line, "granted ")
			at, err := strconv.ParseInt(ts, 10, 64)
			if !ok || err != nil {
				t.Fatalf("peer: %q", line)
			}
			if at < released {
				t.Fatalf("the plantdb %s was granted at %d, before our release at %d", c.peer, at, released)
			}
			peerRelease(t, p)
		})
	}
}

// TestOrphanWaitHonoursTimeout: waiting for an orphan's holder ends with
// the request's deadline, and the flock kept meanwhile is given back.
func TestOrphanWaitHonoursTimeout(t *testing.T) {
	root := t.TempDir()
	m, _ := loggedManager(t, root)
	a := peerHold(t, root, "s", "shared")
	b := peerHold(t, root, "s", "shared")
	peerRelease(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := m.Acquire(ctx, "s", Exclusive, testOwner("w")); err == nil {
		t.Fatal("granted while a plantdb reader holds the orphaned lock file")
	}
	if got := flockHolders(t, filepath.Join(root, ".locks", "s.lock")); len(got) != 0 {
		t.Fatalf("after the timeout the lock file is still held: %v", got)
	}
	peerRelease(t, b)
	mustRelease(t, mustAcquire(t, m, "s", Exclusive, testOwner("w")))
}

// TestPlantdbReaderNeverSharesOurHold: a plantdb reader's release unlinks
// the lock file, so it must never share our flock. Our reader that finds
// one holding waits for it; once plantdb is known on the scan our readers
// hold LOCK_EX, so a plantdb reader arriving later waits for them.
func TestPlantdbReaderNeverSharesOurHold(t *testing.T) {
	root := t.TempDir()
	m, hook := loggedManager(t, root)
	x := peerHold(t, root, "s", "shared")
	w := goAcquire(t, m, context.Background(), "s", Shared, testOwner("r"))
	// Our reader must have met the plantdb reader (its S.info) before
	// that one leaves; a loaded machine may delay it past the release.
	waitFor(t, "our reader to see the plantdb reader", func() bool { return hook.has("a process outside scanlockfs uses the scan") })
	pending(t, w, "our reader while a plantdb reader holds the scan")
	released := peerRelease(t, x)
	r := get(t, w)
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.l.Release()
	if r.at < released {
		t.Fatalf("our reader was granted at %d, before the plantdb reader released at %d", r.at, released)
	}
	// Our own readers still share the hold inside the process.
	defer mustAcquire(t, m, "s", Shared, testOwner("r2")).Release()
	y := startPeer(t, "hold", root, "s", "--mode", "shared", "--timeout", "0.3")
	if line := y.recv(); line != "timeout" {
		t.Fatalf("a plantdb reader got %q while our readers hold the scan", line)
	}
}

// TestPlantdbPollerGetsItsTurn: under continuous hand-overs between our
// writers a plantdb reader, which tries every 100 ms, is granted each
// time within its timeout: the scan is left free for its next attempt
// once it was seen trying.
func TestPlantdbPollerGetsItsTurn(t *testing.T) {
	root := t.TempDir()
	m, _ := loggedManager(t, root)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 3) // each writer's holds
	for i := range 3 {
		go func() {
			n := 0
			defer func() { done <- n }()
			o := testOwner("w" + strconv.Itoa(i))
			for ctx.Err() == nil {
				l, err := m.Acquire(ctx, "s", Exclusive, o)
				if err != nil {
					return
				}
				time.Sleep(5 * time.Millisecond) // held far longer than a hand-over takes
				l.Release()
				n++
			}
		}()
	}
	p := startPeer(t, "serve", root, "s")
	if line := p.recv(); line != "ready" {
		t.Fatalf("peer: %q", line)
	}
	const grants = 5
	for i := range grants {
		p.send("acquire shared 5000")
		if line := p.recv(); !strings.HasPrefix(line, "waiting ") {
			t.Fatalf("peer: %q", line)
		}
		if line := p.recv(); !strings.HasPrefix(line, "ok ") {
			t.Fatalf("plantdb reader's request %d of %d under continuous writers: %q", i+1, grants, line)
		}
		p.send("release")
		p.recv()
	}
	cancel()
	if <-done+<-done+<-done == 0 {
		t.Fatal("our writers made no progress")
	}
}

// waitsForOrphan checks that a request for scan s in mode waits while
// the peer holder holds an orphaned lock file of it, is granted after its
// release, and that the race was logged once, naming it.
func waitsForOrphan(t *testing.T, m *Manager, hook *memHook, holder *proc, mode Mode) {
	t.Helper()
	w := goAcquire(t, m, context.Background(), "s", mode, testOwner("w"))
	waitFor(t, "the race logged", func() bool { return raceWarnings(hook, holder.pid) > 0 })
	pending(t, w, "our request while a plantdb process holds the orphaned lock file")
	released := peerRelease(t, holder)
	r := get(t, w)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.at < released {
		t.Fatalf("our %v request was granted at %d, before the orphan's holder released at %d", mode, r.at, released)
	}
	// The holder's release unlinked whatever s.lock named, which may be
	// the file we kept our place with: our grant must be on a file that
	// still has the name, or the next plantdb process overlaps us.
	lock := filepath.Join(m.lockDir, "s.lock")
	if !exists(lock) || flockHolders(t, lock)[unix.Getpid()] < mode {
		t.Fatalf("granted %v on a lock file that lost its name when the orphan's holder released", mode)
	}
	mustRelease(t, r.l)
	if n := raceWarnings(hook, holder.pid); n != 1 {
		hook.dump(t)
		t.Fatalf("%d warnings naming the orphan's holder %d, want 1", n, holder.pid)
	}
}

// raceWarnings counts the warnings about a plantdb race naming pid.
// has reports whether a message containing msg was logged.
func (h *memHook) has(msg string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.l {
		if strings.Contains(l, msg) {
			return true
		}
	}
	return false
}

func raceWarnings(h *memHook, pid int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.l {
		if strings.Contains(l, "another process unlinked") && strings.Contains(l, "orphan_pids:["+strconv.Itoa(pid)+"]") {
			n++
		}
	}
	return n
}

func isWouldBlock(err error) bool { return errKind(err) == "wouldblock" }

// mtime returns the modification time of path in nanoseconds.
func mtime(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mtim.Nano()
}
