package tests

import (
	"os"
	"path/filepath"
	"testing"
)

// Regression test for a cross-process wait on an abandoned upgrade,
// found by the soak test (two processes each kept a shared flock nobody
// held any more while converting it to exclusive for a writer, each
// waiting for the other to let go, until both writers timed out).
//
// Two mounts of one SOURCE (two daemons, as two processes of any
// lockmgr user would be). In each, a process reads scanA and then opens
// it for writing: an upgrade, which waits for the other daemon's reader.
// That is a true deadlock while both keep reading; but then both close
// their read handles. Nobody holds scanA any more, so one writer must
// get it, and the other after it closes.
func TestAbandonedUpgradesDoNotWaitForEachOther(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d1 := mountT(t, src, "--log-level", "debug", "--timeout", "5s")
	mnt2 := filepath.Join(t.TempDir(), "mnt2")
	must(t, os.Mkdir(mnt2, 0o755))
	d2 := mountOn(t, src, mnt2, "--log-level", "debug", "--timeout", "5s")
	base1, base2 := d1.leakBaseline(t), d2.leakBaseline(t)

	a := startPy(t, "A", nil, pyOpener)
	b := startPy(t, "B", nil, pyOpener)
	a.send("open r " + d1.path("scanA/files.json") + " r")
	b.send("open r " + d2.path("scanA/files.json") + " r")
	for _, p := range []*pyProc{a, b} {
		if r, _ := p.result("r"); r != "opened" {
			t.Fatalf("%s: read open: %s", p.name, r)
		}
	}
	a.send("open w " + d1.path("scanA/files.json") + " w")
	d1.waitQueued(t, a.pid())
	b.send("open w " + d2.path("scanA/files.json") + " w")
	d2.waitQueued(t, b.pid())

	a.send("close r")
	b.send("close r")
	a.result("r")
	b.result("r")

	// One writer gets the scan; the other once the first closes.
	first, second := a, b
	if firstWithResult(t, "w", a, b) == b {
		first, second = b, a
	}
	if r, _ := first.result("w"); r != "opened" {
		t.Fatalf("%s's write open after both readers closed: %s, want it granted (nobody holds scanA)", first.name, r)
	}
	first.send("close w")
	first.result("w")
	if r, _ := second.result("w"); r != "opened" {
		t.Fatalf("%s's write open after the other writer closed: %s", second.name, r)
	}
	second.send("close w")
	second.result("w")
	waitFree(t, src, "scanA")
	d1.checkNoLeaks(t, base1)
	d2.checkNoLeaks(t, base2)
}
