package lockmgr

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/sirupsen/logrus"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// interval is one hold of a lock: begin after the grant, end before the
// release, both CLOCK_MONOTONIC.
type interval struct {
	who        string
	mode       Mode
	begin, end int64
}

// checkNoOverlap fails the test if an exclusive hold overlaps any other
// hold. Holds are measured conservatively (inside the real hold), so a
// correct lock never produces an overlap.
type memHook struct {
	mu sync.Mutex
	l  []string
}

func (h *memHook) Levels() []logrus.Level { return logrus.AllLevels }
func (h *memHook) Fire(e *logrus.Entry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.l = append(h.l, fmt.Sprintf("%d %s %v", mono(), e.Message, e.Data))
	return nil
}
func (h *memHook) dump(t *testing.T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.l {
		t.Log(l)
	}
}

func checkNoOverlap(t *testing.T, ivs []interval) bool {
	t.Helper()
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].begin < ivs[j].begin })
	bad := 0
	for i, a := range ivs {
		for _, b := range ivs[i+1:] {
			if b.begin >= a.end {
				break
			}
			if a.mode == Exclusive || b.mode == Exclusive {
				bad++
				if bad <= 5 {
					t.Errorf("overlap: %s %v [%d, %d] and %s %v [%d, %d] (%v together)",
						a.who, a.mode, a.begin, a.end, b.who, b.mode, b.begin, b.end,
						time.Duration(min(a.end, b.end)-b.begin))
				}
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d overlaps in all", bad)
	}
	return bad == 0
}

// readPeerIntervals collects the peer's "interval MODE BEGIN END" lines
// until "done".
func readPeerIntervals(t *testing.T, p *proc) []interval {
	t.Helper()
	var ivs []interval
	for {
		f := strings.Fields(p.recv())
		switch {
		case len(f) == 4 && f[0] == "interval":
			ivs = append(ivs, interval{fmt.Sprintf("python %d", p.pid), parseMode(f[1]), atoi64(t, f[2]), atoi64(t, f[3])})
		case len(f) == 1 && f[0] == "done":
			return ivs
		default:
			t.Fatalf("peer: unexpected %q", strings.Join(f, " "))
		}
	}
}

// TestPlantdbPeerExclusion: a Go process and a plantdb process take turns
// on one scan; their holds never overlap where one is exclusive, also
// when the peer pauses between its unlock and its unlink (our grant then
// falls into plantdb's release window).
func TestPlantdbPeerExclusion(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		goMode, pyMode Mode
		pause          string
	}{
		{Exclusive, Exclusive, "0"},
		{Exclusive, Shared, "0"},
		{Shared, Exclusive, "0"},
		{Exclusive, Exclusive, "0.003"},
		{Exclusive, Shared, "0.003"},
	} {
		t.Run(fmt.Sprintf("go-%v/python-%v/pause-%s", tt.goMode, tt.pyMode, tt.pause), func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			dbg := &memHook{}
			lg := logrus.New()
			lg.SetOutput(io.Discard)
			lg.SetLevel(logrus.DebugLevel)
			lg.AddHook(dbg)
			m := newManager(t, root, WithLogger(lg))
			peer := startPeer(t, "intervals", root, "s", "--mode", tt.pyMode.String(),
				"-n", "10", "--hold-ms", "5", "--release-pause", tt.pause)

			ivs := make(chan []interval, 1)
			stop := make(chan struct{})
			go func() {
				var mine []interval
				defer func() { ivs <- mine }()
				for {
					select {
					case <-stop:
						return
					default:
					}
					l, err := m.Acquire(context.Background(), "s", tt.goMode, testOwner("go"))
					if err != nil {
						t.Error(err)
						return
					}
					b := mono()
					time.Sleep(8 * time.Millisecond)
					e := mono()
					l.Release()
					mine = append(mine, interval{"go", tt.goMode, b, e})
					time.Sleep(4 * time.Millisecond)
				}
			}()
			py := readPeerIntervals(t, peer)
			close(stop)
			mine := <-ivs
			if len(py) != 10 || len(mine) == 0 {
				t.Fatalf("%d python and %d go holds: no contest", len(py), len(mine))
			}
			if !checkNoOverlap(t, append(mine, py...)) {
				dbg.dump(t)
			}
			st := m.Stats()
			t.Logf("%d go holds, %d python holds; go waited in %d grants; lock file replaced under us %d times",
				len(mine), len(py), st.GrantsShared+st.GrantsExclusive-st.WaitCounts[0], st.Replaced)
		})
	}
}

// TestPlantdbPeerNoLostUpdate: plantdb processes and Go processes
// increment one counter; no update is lost and no reader sees a torn
// file.
func TestPlantdbPeerNoLostUpdate(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	counter := filepath.Join(root, "counter")
	writeCounterFile(t, counter, 0)
	reader := startHelper(t, root, "")
	reader.ok("readers c %s 1", counter)
	var peers []*proc
	for range 2 {
		peers = append(peers, startPeer(t, "increment", root, "c", "--counter", counter, "-n", "8"))
	}
	w := startHelper(t, root, "")
	w.send("increment c %s 15 2", counter)
	m := newManager(t, root)
	if err := incrementConcurrently(m, "c", counter, 15, 1, "tester"); err != nil {
		t.Error(err)
	}
	if line := w.recv(); line != "ok" {
		t.Errorf("go writer: %s", line)
	}
	for _, p := range peers {
		if line := p.recv(); line != "done 8" {
			t.Errorf("python writer: %q", line)
		}
	}
	f := reader.ok("stop")
	if f[1] != "0" {
		t.Errorf("reader saw %s torn files: %s", f[1], f[2])
	}
	got, err := readCounterFile(counter)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2*8 + 2*15 + 15; got != want {
		t.Errorf("counter = %d, want %d", got, want)
	}
}
