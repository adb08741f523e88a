package lockmgr

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCrossProcessModes: two helper processes; shared/shared coexist, any
// pair with an exclusive side excludes, and the waiter is granted only
// after the holder's release (CLOCK_MONOTONIC timestamps).
func TestCrossProcessModes(t *testing.T) {
	root := t.TempDir()
	a := startHelper(t, root, "")
	b := startHelper(t, root, "")
	for _, tt := range []struct {
		first, second string
		coexist       bool
	}{
		{"shared", "shared", true},
		{"shared", "exclusive", false},
		{"exclusive", "shared", false},
		{"exclusive", "exclusive", false},
	} {
		a.ok("try s %s", tt.first)
		if tt.coexist {
			b.ok("try s %s", tt.second)
			if got := flockHolders(t, filepath.Join(root, ".locks", "s.lock")); len(got) != 2 {
				t.Errorf("%s/%s: holders %v, want both", tt.first, tt.second, got)
			}
			b.ok("release s")
			a.ok("release s")
			continue
		}
		if k := b.fails("try s %s", tt.second); k != "wouldblock" {
			t.Fatalf("%s then %s: try = %s, want wouldblock", tt.first, tt.second, k)
		}
		b.send("acquire s %s 10000", tt.second)
		// b waits: it has not answered while a still holds, as the
		// timestamps below prove.
		rel := atoi64(t, a.ok("release s")[0])
		f := strings.Fields(b.recv())
		if f[0] != "ok" {
			t.Fatalf("%s then %s: b's acquire: %v", tt.first, tt.second, f)
		}
		if granted := atoi64(t, f[1]); granted < rel {
			t.Errorf("%s then %s: b granted at %d, before a released at %d", tt.first, tt.second, granted, rel)
		}
		if waited := time.Duration(atoi64(t, f[2])); waited <= 0 {
			t.Errorf("b did not wait: %v", waited)
		}
		b.ok("release s")
	}
}

func TestCrossProcessTimeout(t *testing.T) {
	root := t.TempDir()
	a := startHelper(t, root, "")
	b := startHelper(t, root, "timeout=150ms")
	a.ok("try s exclusive")
	for _, tt := range []struct {
		mode     string
		ctxMS    int
		atLeast  time.Duration
		atMostMS time.Duration
	}{
		{"shared", 0, 150 * time.Millisecond, 5 * time.Second},           // the manager's default
		{"exclusive", 0, 150 * time.Millisecond, 5 * time.Second},        // the manager's default
		{"exclusive", 60, 60 * time.Millisecond, 150 * time.Millisecond}, // the context's deadline wins
	} {
		start := time.Now()
		if k := b.fails("acquire s %s %d", tt.mode, tt.ctxMS); k != "timeout" {
			t.Errorf("%+v: %s, want timeout", tt, k)
		}
		if d := time.Since(start); d < tt.atLeast || d >= tt.atMostMS {
			t.Errorf("%+v: timed out after %v", tt, d)
		}
	}
}

// TestKilledHolderFreesLock: the kernel drops the flocks of a killed
// process; a waiter in another process gets the lock.
func TestKilledHolderFreesLock(t *testing.T) {
	root := t.TempDir()
	holder := startHelper(t, root, "infodelay=0")
	waiter := startHelper(t, root, "")
	holder.ok("try s exclusive")
	waiter.send("acquire s exclusive 10000")
	killed := mono()
	holder.kill()
	f := strings.Fields(waiter.recv())
	if f[0] != "ok" {
		t.Fatalf("waiter after the kill: %v", f)
	}
	if granted := atoi64(t, f[1]); granted < killed {
		t.Fatalf("waiter granted at %d, before the holder was killed at %d", granted, killed)
	}
	// The dead holder's .info was replaced or is ignored; purge removes
	// nothing that is held.
	var removed []string
	waiter.okJSON(&removed, "purge real")
	if slices.Contains(removed, filepath.Join(root, ".locks", "s.lock")) {
		t.Errorf("purge removed a held lock file: %v", removed)
	}
}

// TestStalePurgeNeverRemovesHeldLocks: New's clean-up removes lock files
// nobody holds (and the litter of dead processes) but never a lock file
// held by another process, shared or exclusive.
func TestStalePurgeNeverRemovesHeldLocks(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, ".locks")
	exH := startHelper(t, root, "infodelay=0")
	shH := startHelper(t, root, "infodelay=0")
	exH.ok("try held-ex exclusive")
	shH.ok("try held-sh shared")
	peer := startPeer(t, "hold", root, "held-py", "--mode", "shared")
	if line := peer.recv(); !strings.HasPrefix(line, "granted") {
		t.Fatalf("peer: %q", line)
	}
	defer peer.send("release")
	held := map[string]uint64{}
	for _, id := range []string{"held-ex", "held-sh", "held-py"} {
		held[id] = inode(t, filepath.Join(dir, id+".lock"))
	}
	dead := deadPID(t)
	stale := []string{"free.lock", "free.info", "free.gate", "orphan.info", ".info-tmp-" + strconv.Itoa(dead) + "-7"}
	for _, name := range stale {
		content := `{"scan_id":"x","pid":` + strconv.Itoa(dead) + `}`
		if strings.HasSuffix(name, ".lock") || strings.HasSuffix(name, ".gate") {
			content = "" // lock and gate files are empty
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o664); err != nil {
			t.Fatal(err)
		}
	}
	// Not stale: an .info without lock file whose writer is alive.
	if err := os.WriteFile(filepath.Join(dir, "alive.info"), []byte(`{"pid":`+strconv.Itoa(os.Getpid())+`}`), 0o664); err != nil {
		t.Fatal(err)
	}

	m := newManager(t, root, WithStaleCleanup(false))
	dry, err := m.PurgeStale(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range stale {
		if !exists(filepath.Join(dir, name)) {
			t.Errorf("dry run removed %s", name)
		}
	}

	m2 := newManager(t, root) // purges at New
	for id, ino := range held {
		p := filepath.Join(dir, id+".lock")
		if !exists(p) || inode(t, p) != ino {
			t.Errorf("%s: the held lock file was removed or replaced", id)
		}
		if _, err := m2.TryAcquire(id, Exclusive, testOwner("x")); err == nil {
			t.Errorf("%s: acquired although another process holds it", id)
		}
	}
	for _, name := range stale {
		if exists(filepath.Join(dir, name)) {
			t.Errorf("stale %s survived the purge", name)
		}
	}
	if !exists(filepath.Join(dir, "alive.info")) {
		t.Error("purge removed the .info of a live process")
	}
	var want []string
	for _, name := range stale {
		want = append(want, filepath.Join(dir, name))
	}
	slices.Sort(want)
	slices.Sort(dry)
	if !slices.Equal(dry, want) {
		t.Errorf("dry run listed %v, want %v", dry, want)
	}
}

// deadPID returns the PID of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	p := startHelper(t, t.TempDir(), "")
	p.stop()
	return p.pid
}

// TestWriterPriorityAcrossProcesses: reader processes that keep the scan
// shared without a gap (their goroutines' holds overlap, so each process
// never drops its flock) must not starve a writer in another process.
func TestWriterPriorityAcrossProcesses(t *testing.T) {
	root := t.TempDir()
	var readers []*proc
	for range 2 {
		r := startHelper(t, root, "timeout=3s")
		r.ok("share s 3 2000")
		readers = append(readers, r)
	}
	w := startHelper(t, root, "")
	for range 3 {
		w.ok("acquire s exclusive 5000")
		w.ok("release s")
	}
	for _, r := range readers {
		if n := atoi64(t, r.ok("stop")[0]); n < 3 {
			t.Errorf("reader %d made only %d reads", r.pid, n)
		}
	}
	// The writer's gate went away with its grant: a new reader elsewhere
	// gets in at once, although the writer keeps its descriptor open.
	startHelper(t, root, "").ok("try s shared")
}

// TestAbandonedUpgradesAcrossProcesses: in each of two processes an owner
// reads the scan and then asks for it exclusively (an upgrade, waiting
// for the other process's reader), then both readers let go. Nobody
// holds the scan any more: the processes must drop the shared flocks no
// owner needs, so that one writer gets the scan and the other after it,
// instead of each waiting for the other's orphan flock until timing out.
func TestAbandonedUpgradesAcrossProcesses(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	procs := []*proc{startHelper(t, root, "timeout=10s"), startHelper(t, root, "timeout=10s")}
	for _, p := range procs {
		p.ok("try s shared A")
	}
	for _, p := range procs {
		p.ok("bg w acquire s exclusive 0 A")
		waitFor(t, "the upgrade queued", func() bool {
			var st ScanStatus
			p.okJSON(&st, "status s")
			for _, w := range st.Waiters {
				if w.Where == WhereLocal && w.Mode == Exclusive {
					return true
				}
			}
			return false
		})
	}
	// Release the shared leases; the upgrades go on waiting as plain
	// writers. Once the second process lets go, one writer may be granted
	// before the release's own reply reaches us: keep that line.
	early := map[*proc]string{}
	for _, p := range procs {
		p.send("release s")
		for {
			line := p.recv()
			if strings.HasPrefix(line, "bg w ") {
				early[p] = line
				continue
			}
			if f := strings.Fields(line); len(f) == 0 || f[0] != "ok" {
				t.Fatalf("helper %d: release s: got %q", p.pid, line)
			}
			break
		}
	}
	// One writer gets the scan, then the other once the first releases.
	first, second := procs[0], procs[1]
	var line string
	switch {
	case early[procs[0]] != "":
		line = early[procs[0]]
	case early[procs[1]] != "":
		line, first, second = early[procs[1]], procs[1], procs[0]
	default:
		select {
		case line = <-procs[0].lines:
		case line = <-procs[1].lines:
			first, second = procs[1], procs[0]
		case <-time.After(20 * time.Second):
			t.Fatal("neither writer returned")
		}
	}
	if !strings.HasPrefix(line, "bg w ok ") {
		t.Fatalf("first writer (pid %d): %q, want it granted: nobody holds the scan", first.pid, line)
	}
	if early[second] != "" {
		t.Fatalf("both writers granted at once: %q and %q", line, early[second])
	}
	first.ok("release s")
	if line := second.recv(); !strings.HasPrefix(line, "bg w ok ") {
		t.Fatalf("second writer (pid %d) after the first released: %q", second.pid, line)
	}
	second.ok("release s")
}
