package lockmgr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestInfoContent(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithInfoDelay(0))
	p := filepath.Join(root, ".locks", "s1.info")
	for _, mode := range []Mode{Shared, Exclusive} {
		before := float64(time.Now().UnixNano()) / 1e9
		l, err := m.Acquire(context.Background(), "s1", mode, Owner{User: "alice", Key: "k", Note: "reading"})
		if err != nil {
			t.Fatal(err)
		}
		after := float64(time.Now().UnixNano()) / 1e9
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("no .info while holding %v: %v", mode, err)
		}
		// plantdb's fields with plantdb's JSON types.
		var raw map[string]any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&raw); err != nil {
			t.Fatal(err)
		}
		str := func(k string) string { s, _ := raw[k].(string); return s }
		num := func(k string) json.Number { n, _ := raw[k].(json.Number); return n }
		if str("scan_id") != "s1" || str("lock_type") != mode.String() || str("user") != "alice" {
			t.Errorf("%s: wrong scan_id, lock_type or user", data)
		}
		ts, err := num("timestamp").Float64()
		if err != nil || ts < before || ts > after {
			t.Errorf("timestamp %v not a float within [%f, %f]", raw["timestamp"], before, after)
		}
		if pid, _ := num("pid").Int64(); int(pid) != os.Getpid() {
			t.Errorf("pid %v, want %d", raw["pid"], os.Getpid())
		}
		if tid, err := num("thread_id").Int64(); err != nil || tid <= 0 {
			t.Errorf("thread_id %v is not a positive integer", raw["thread_id"])
		}
		if str("tool") != infoTool || str("owner") != "k" {
			t.Errorf("%s: our extra fields are missing", data)
		}
		// The file is world-readable: the owner's note (a path through
		// the mount, a command line) must not be in it.
		if _, ok := raw["note"]; ok || strings.Contains(string(data), "reading") {
			t.Errorf("%s: the note is in the world-readable .info", data)
		}
		mustRelease(t, l)
		if exists(p) {
			t.Errorf(".info still there after the last release of %v", mode)
		}
	}
}

// TestInfoDelayed: with the default background writing, short holds never
// write .info; longer ones do, and the file goes away before the flock.
func TestInfoDelayed(t *testing.T) {
	root := t.TempDir()
	const delay = 30 * time.Millisecond
	m := newManager(t, root, WithInfoDelay(delay))
	p := filepath.Join(root, ".locks", "s.info")
	for range 50 {
		l := mustAcquire(t, m, "s", Exclusive, testOwner("short"))
		mustRelease(t, l)
	}
	if n := m.Stats().InfoWrites; n != 0 {
		t.Errorf("%d .info writes for holds shorter than the delay", n)
	}
	granted := time.Now()
	l := mustAcquire(t, m, "s", Shared, testOwner("long"))
	waitFor(t, ".info written", func() bool { return exists(p) })
	if d := time.Since(granted); d < delay {
		t.Errorf(".info appeared %v after the grant, before the %v delay", d, delay)
	}
	inf, err := m.ReadInfo("s")
	if err != nil || inf == nil || inf.LockType != "shared" || inf.User != "tester" {
		t.Fatalf("ReadInfo = %+v, %v", inf, err)
	}
	// The timestamp is the time of the grant, not of the write.
	if d := inf.Time().Sub(granted); d < -time.Millisecond || d > delay/2 {
		t.Errorf("timestamp is %v after the grant", d)
	}
	// An upgrade rewrites it.
	ex := mustAcquire(t, m, "s", Exclusive, testOwner("long"))
	waitFor(t, ".info rewritten", func() bool {
		inf, _ := m.ReadInfo("s")
		return inf != nil && inf.LockType == "exclusive"
	})
	mustRelease(t, ex)
	mustRelease(t, l)
	if exists(p) {
		t.Error(".info outlived the release")
	}
}

// TestInfoReleaseWaitsForWrite: a release that races the background
// write never leaves an .info behind.
func TestInfoReleaseWaitsForWrite(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithInfoDelay(time.Microsecond))
	p := filepath.Join(root, ".locks", "s.info")
	for i := range 300 {
		l := mustAcquire(t, m, "s", Exclusive, testOwner("a"))
		if i%2 == 1 {
			time.Sleep(time.Duration(i%7) * 20 * time.Microsecond)
		}
		mustRelease(t, l)
		if exists(p) {
			t.Fatalf("round %d: .info left behind after release", i)
		}
	}
	if m.Stats().InfoWrites == 0 {
		t.Error("no background write ever happened: the race was not exercised")
	}
}

// TestInfoAtomic: a reader never sees half an .info file.
func TestInfoAtomic(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithInfoDelay(0))
	p := filepath.Join(root, ".locks", "s.info")
	var stop atomic.Bool
	var reads, complete atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				data, err := os.ReadFile(p)
				if errors.Is(err, os.ErrNotExist) {
					continue
				}
				reads.Add(1)
				var inf Info
				if err := json.Unmarshal(data, &inf); err != nil || inf.ScanID != "s" {
					t.Errorf("reader saw %q: %v", data, err)
					stop.Store(true)
					return
				}
				complete.Add(1)
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; (i < 300 || complete.Load() < 50) && time.Now().Before(deadline) && !stop.Load(); i++ {
		l := mustAcquire(t, m, "s", Mode(1+i%2), testOwner("w"))
		mustRelease(t, l)
	}
	stop.Store(true)
	wg.Wait()
	if complete.Load() == 0 {
		t.Error("the readers never caught an .info file")
	}
}

// TestInfoNotRemovedIfReplaced: the .info file is removed on release only
// if it is still the one we wrote.
func TestInfoNotRemovedIfReplaced(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root, WithInfoDelay(0))
	p := filepath.Join(root, ".locks", "s.info")
	l := mustAcquire(t, m, "s", Shared, testOwner("a"))
	// Another process, a fellow reader, replaces it with its own.
	h := startHelper(t, root, "infodelay=0,user=bob")
	h.ok("try s shared")
	theirs, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if inf, _ := m.ReadInfo("s"); inf == nil || inf.User != "bob" {
		t.Fatalf("the helper did not replace .info: %s", theirs)
	}
	mustRelease(t, l)
	now, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(now, theirs) {
		t.Fatalf("the other process's .info was removed or changed by our release: %q, %v", now, err)
	}
	// Its owner removes it.
	h.ok("release s")
	if exists(p) {
		t.Error("the helper's release left its .info")
	}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func TestWithInfoFilesOff(t *testing.T) {
	root := t.TempDir()
	for _, delay := range []time.Duration{0, time.Microsecond} {
		m := newManager(t, root, WithInfoFiles(false), WithInfoDelay(delay))
		l := mustAcquire(t, m, "s", Exclusive, testOwner("a"))
		time.Sleep(5 * time.Millisecond) // well past the delay
		if exists(filepath.Join(root, ".locks", "s.info")) {
			t.Errorf("delay %v: .info written although turned off", delay)
		}
		mustRelease(t, l)
		if n := m.Stats().InfoWrites; n != 0 {
			t.Errorf("delay %v: %d .info writes", delay, n)
		}
		m.Close()
	}
}

// TestInfoDelayPerScan: the .info writes of several scans share one
// timer; each is still written only once its own hold has lasted the
// delay, also when the scan was released and taken again meanwhile.
func TestInfoDelayPerScan(t *testing.T) {
	root := t.TempDir()
	const delay = 40 * time.Millisecond
	m := newManager(t, root, WithInfoDelay(delay))
	held := map[string]time.Time{}
	var leases []*Lease
	for _, id := range []string{"a", "b", "c"} {
		if id == "c" {
			// Held and released once before: the delay counts from the
			// new grant.
			mustRelease(t, mustAcquire(t, m, id, Shared, testOwner("x")))
		}
		held[id] = time.Now()
		leases = append(leases, mustAcquire(t, m, id, Shared, testOwner("x")))
		time.Sleep(delay / 4) // stagger the grants; what is checked does not depend on it
	}
	seen := map[string]time.Duration{}
	waitFor(t, "every .info written", func() bool {
		for id, at := range held {
			if _, ok := seen[id]; !ok && exists(filepath.Join(root, ".locks", id+".info")) {
				seen[id] = time.Since(at)
			}
		}
		return len(seen) == len(held)
	})
	for id, d := range seen {
		if d < delay {
			t.Errorf("%s.info appeared %v after its grant, before the %v delay", id, d, delay)
		}
	}
	for _, l := range leases {
		mustRelease(t, l)
	}
	for id := range held {
		if exists(filepath.Join(root, ".locks", id+".info")) {
			t.Errorf("%s.info outlived the release", id)
		}
	}
}
