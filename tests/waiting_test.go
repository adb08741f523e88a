package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"scanlockfs/tests/internal/checker"
)

// Two readers of one scan hold it at the same time: the second open
// returns while the first handle is still open.
func TestReadersOverlap(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	a, b := startClient(t, "reader A"), startClient(t, "reader B")
	a.mustOpen("r", d.path("scanA/files.json"), "r")
	opened := b.mustOpen("r", d.path("scanA/files.json"), "r")
	closing := a.close("r")
	if opened > closing {
		t.Fatalf("second reader's open returned after the first reader closed: they did not overlap")
	}
	// A real program reads while both handles are open too.
	if got := run(t, "cat", d.path("scanA/files.json")); got != "files of scanA\n" {
		t.Fatalf("cat read %q", got)
	}
}

// A writer waits for the readers of its scan, and a reader for the writer.
// Proof: the waiting process was seen blocked in openat while the other
// held the scan, and its open returned only after the other's close began.
func TestWriterWaitsForReaderAndReaderForWriter(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	f := d.path("scanA/files.json")
	reader, writer := startClient(t, "reader"), startClient(t, "writer")

	reader.mustOpen("r", f, "r")
	started := writer.open("w", f, "wt")
	d.waitQueued(t, writer.pid())
	closing := reader.close("r")
	w := writer.result("w")
	if w.kind != "ok" {
		t.Fatalf("writer's open: %s", w.errno)
	}
	if !(started < closing && closing < w.at) {
		t.Fatalf("writer did not wait for the reader: open started %d, reader closing %d, open returned %d", started, closing, w.at)
	}

	// Now the writer holds the scan: cat waits, then reads what it wrote.
	writer.send("write w new content")
	if r := writer.result("w"); r.kind != "ok" {
		t.Fatalf("write: %s", r.errno)
	}
	cat := startProgram(t, "cat", f)
	d.waitQueued(t, cat.cmd.Process.Pid)
	closing = writer.close("w")
	if got := cat.wait(t); got != "new content" {
		t.Fatalf("cat read %q after the writer released the scan", got)
	}
	if cat.end < closing {
		t.Fatalf("cat finished before the writer closed")
	}
}

// Different scans never wait for each other.
func TestDifferentScansDoNotBlock(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA", "scanB"))
	a := startClient(t, "writer A")
	a.mustOpen("w", d.path("scanA/files.json"), "w")
	b := startClient(t, "writer B")
	opened := b.mustOpen("w", d.path("scanB/files.json"), "w")
	closing := a.close("w")
	if opened > closing {
		t.Fatal("writer of scanB waited for the writer of scanA")
	}
	b.close("w")
	// Real programs on other scans and on root files while scanA is held.
	a.mustOpen("w", d.path("scanA/files.json"), "w")
	run(t, "sh", "-c", "echo more >> "+d.path("scanB/files.json"))
	if got := run(t, "cat", d.path("users.json")); got != "{}\n" {
		t.Fatalf("root file: %q", got)
	}
	run(t, "cp", d.path("users.json"), d.path("users.json.bak"))
	a.close("w")
}

// --timeout 1s: an open that cannot get its scan fails with EBUSY after
// about a second.
func TestTimeoutGivesEBUSY(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--timeout", "1s")
	w := startWriter(t, d.path("scanA/files.json"))
	code, stderr, elapsed := runErr(t, "cat", d.path("scanA/files.json"))
	if code == 0 || !strings.Contains(strings.ToLower(stderr), syscall.EBUSY.Error()) {
		t.Fatalf("cat: exit %d, stderr %q; want EBUSY", code, stderr)
	}
	if elapsed < 900*time.Millisecond || elapsed > 10*time.Second {
		t.Fatalf("EBUSY after %v, want about 1s", elapsed)
	}
	w.close("w")
}

// O_NONBLOCK: EAGAIN at once, whoever holds the scan.
func TestNonblockGivesEAGAIN(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	f := d.path("scanA/files.json")
	w := startWriter(t, f)
	// EAGAIN while the writer holds the scan: an open that waited would
	// wait for the writer, who closes only afterwards, or time out with
	// EBUSY. The daemon counts the refusal as would_block: it refused
	// without waiting (a wait that ends in a refusal counts as timeout).
	code, stderr, _ := runErr(t, "python3", "-c", `
import os, sys
try:
    os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
except BlockingIOError as e:
    print(e, file=sys.stderr)
    sys.exit(11)
`, f)
	if code != 11 {
		t.Fatalf("python3: exit %d, stderr %q; want EAGAIN", code, stderr)
	}
	checkRefusedAtOnce(t, d, 1)
	w.close("w")
	// A reader holding the scan also makes a non-blocking writer fail.
	r := startClient(t, "reader")
	r.mustOpen("r", f, "r")
	c := startClient(t, "nonblocking writer")
	c.open("w", f, "wn")
	if res := c.result("w"); res.kind != "err" || res.errno != "EAGAIN" {
		t.Fatalf("O_WRONLY|O_NONBLOCK under a reader: %+v", res)
	}
	checkRefusedAtOnce(t, d, 2)
	// ...but a non-blocking reader gets in.
	c.mustOpen("r", f, "rn")
}

// checkRefusedAtOnce checks that the daemon refused n lock requests
// without waiting (would_block) and none after a wait (timeout).
func checkRefusedAtOnce(t *testing.T, d *daemon, n float64) {
	t.Helper()
	fams := d.metrics(t)
	wb := metricValue(t, fams, "scanlockfs_lock_refusals_total", "reason", "would_block")
	to := metricValue(t, fams, "scanlockfs_lock_refusals_total", "reason", "timeout")
	if wb != n || to != 0 {
		t.Fatalf("refusals: %v would_block, %v timeout; want %v and 0", wb, to, n)
	}
}

// A cat waiting for its scan and killed with SIGINT returns, and leaves
// nothing queued: the next writer gets the scan at once once the holder
// leaves, and the scan ends up free.
func TestInterruptedWaitLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	f := d.path("scanA/files.json")
	w := startWriter(t, f)
	cat := startProgram(t, "cat", f)
	d.waitQueued(t, cat.cmd.Process.Pid)
	must(t, cat.cmd.Process.Signal(os.Interrupt))
	select {
	case <-cat.done:
	case <-time.After(5 * time.Second):
		t.Fatal("cat did not return after SIGINT")
	}
	w.close("w")
	waitFree(t, d.src, "scanA")
	checkNoWaiterLeft(t, f, "after the interrupted cat")
	waitFree(t, d.src, "scanA")
	d.stopAndCheck(t, "cancelled=1")
}

// A client killed with SIGKILL while holding a write handle frees the
// scan for the next opener.
func TestKilledWriterFreesScan(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	f := d.path("scanA/files.json")
	w := startClient(t, "writer")
	w.openHolding("w", f, "w", d.src, "scanA", "exclusive")
	cat := startProgram(t, "cat", f)
	d.waitQueued(t, cat.cmd.Process.Pid)
	must(t, w.cmd.Process.Kill())
	if got := cat.wait(t); got != "files of scanA\n" {
		t.Fatalf("cat after the writer was killed: %q", got)
	}
	waitFree(t, d.src, "scanA")
}

// Two processes that both hold a scan shared and both want it exclusive
// would wait for each other: the second gets EDEADLK at once, and the
// first gets the scan once the second lets go.
func TestUpgradeDeadlockGivesEDEADLK(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	f := d.path("scanA/files.json")
	a, b := twoReaders(t, f, "A", "B")
	a.open("w", f, "w")
	d.waitQueued(t, a.pid())
	start := now()
	b.open("w", f, "w")
	if r := b.result("w"); r.kind != "err" || r.errno != "EDEADLK" {
		t.Fatalf("second upgrade: %+v, want EDEADLK", r)
	} else if time.Duration(r.at-start) > 5*time.Second {
		t.Fatalf("EDEADLK came after %v, want at once", time.Duration(r.at-start))
	}
	closing := b.close("r")
	r := a.result("w")
	if r.kind != "ok" || r.at < closing {
		t.Fatalf("first upgrade: %+v (B closed at %d)", r, closing)
	}
}

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

// The mount and a program that uses lockmgr directly on SOURCE (another
// process, like plantdb) exclude each other on the same scan.
func TestMountAndDirectLockmgrExclude(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	f := d.path("scanA/files.json")
	direct := startClient(t, "direct lockmgr user")

	// Direct writer first: cat through the mount waits for it.
	direct.send("lock L %s scanA exclusive", d.src)
	if r := direct.result("L"); r.kind != "ok" {
		t.Fatalf("direct lock: %s", r.errno)
	}
	direct.send("put P %s 5 1", d.srcPath("scanA/files.json"))
	direct.result("P")
	cat := startProgram(t, "cat", f)
	d.waitQueued(t, cat.cmd.Process.Pid)
	direct.send("unlock L")
	releasing := direct.await("L", false).at
	direct.result("L")
	if got := cat.wait(t); got != string(checker.Content(5, 1)) {
		t.Fatalf("cat after the direct writer: %q", got)
	}
	if cat.end < releasing {
		t.Fatal("cat finished before the direct writer released the scan")
	}

	// Mount writer first: the direct user cannot get the scan until the
	// mount's handle is closed.
	w := startClient(t, "mount writer")
	w.mustOpen("w", f, "w")
	direct.send("try T %s scanA shared", d.src)
	if r := direct.result("T"); r.kind != "err" || r.errno != "WOULDBLOCK" {
		t.Fatalf("direct try-lock under a mount writer: %+v", r)
	}
	direct.send("lock L2 %s scanA exclusive", d.src)
	started := direct.await("L2", false).at
	closing := w.close("w")
	r := direct.result("L2")
	if r.kind != "ok" || !(started < closing && closing < r.at) {
		t.Fatalf("direct lock: %+v; started %d, mount writer closing %d", r, started, closing)
	}
	direct.send("unlock L2")
	direct.result("L2")

	// Readers of both kinds overlap.
	w.mustOpen("r", f, "r")
	direct.send("try T2 %s scanA shared", d.src)
	if r := direct.result("T2"); r.kind != "ok" {
		t.Fatalf("direct shared lock beside a mount reader: %+v", r)
	}
}

// No lost update: 8 processes through the mount (opening the counter for
// writing) and 2 using lockmgr on SOURCE increment one counter 200 times
// each, writing it in two halves; 2 readers through the mount check that
// they never see a half-written counter.
func TestNoLostUpdate(t *testing.T) {
	t.Parallel()
	const perProc = 200
	src := scanDB(t, "scanA")
	counter := filepath.Join(src, "scanA", "counter")
	// slclient's counter format: "count N", a body, "end N".
	must(t, os.WriteFile(counter, checker.CounterContent(0), 0o644))
	d := mountT(t, src, "--timeout", "2m")
	stop := filepath.Join(t.TempDir(), "stop")

	var readers, writers []*program
	for range 2 {
		readers = append(readers, startProgram(t, binClient, "check-mount", d.path("scanA/counter"), stop))
	}
	for range 8 {
		writers = append(writers, startProgram(t, binClient, "incr-mount", d.path("scanA/counter"), strconv.Itoa(perProc)))
	}
	for range 2 {
		writers = append(writers, startProgram(t, binClient, "incr-direct", src, "scanA", "counter", strconv.Itoa(perProc)))
	}
	// 2000 increments in all: on a loaded machine that takes minutes, so
	// wait as long as the counter moves. The mount's own timeout (2m)
	// bounds every wait: a counter still for longer is stuck.
	waitWhileCounting(t, writers, counter, 3*time.Minute)
	must(t, os.WriteFile(stop, nil, 0o644))
	for _, r := range readers {
		if out := r.wait(t); !strings.HasPrefix(out, "reads ") || out == "reads 0\n" {
			t.Errorf("reader: %q", out)
		}
	}
	b, err := os.ReadFile(counter)
	must(t, err)
	want := checker.CounterContent(len(writers) * perProc)
	if !bytes.Equal(b, want) {
		t.Fatalf("final counter: %q..., want %q...", firstLine(b), firstLine(want))
	}
}

// Coherence: a program that opens a file after a writer released the
// scan sees exactly the writer's data and size, also when the writer
// wrote to SOURCE directly (through lockmgr), rewriting the file in place
// or replacing it by rename, growing or shrinking it. With and without
// passthrough.
func TestCoherenceAfterDirectWriter(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name  string
		flags []string
	}{{"passthrough", nil}, {"no-passthrough", []string{"--no-passthrough"}}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			d := mountT(t, scanDB(t, "scanA"), mode.flags...)
			w := startClient(t, "direct writer")
			const iterations = 200
			for i := range iterations {
				size := 1 + (i*7919)%70000
				how := ""
				if i%2 == 1 {
					how = " rename"
				}
				// Stat first, so that a cached size would be stale.
				run(t, "stat", "-c", "%s", d.path("scanA/files.json"))
				w.send("lock L%d %s scanA exclusive", i, d.src)
				if r := w.result(fmt.Sprintf("L%d", i)); r.kind != "ok" {
					t.Fatalf("lock: %s", r.errno)
				}
				w.send("put P%d %s %d %d%s", i, d.srcPath("scanA/files.json"), size, i, how)
				if r := w.result(fmt.Sprintf("P%d", i)); r.kind != "ok" {
					t.Fatalf("put: %s", r.errno)
				}
				w.send("unlock L%d", i)
				w.result(fmt.Sprintf("L%d", i))

				got := run(t, "cat", d.path("scanA/files.json"))
				if want := checker.Content(size, i); got != string(want) {
					t.Fatalf("iteration %d (%s): cat read %d bytes, want %d (the writer's)", i, how, len(got), len(want))
				}
				if got := strings.TrimSpace(run(t, "stat", "-c", "%s", d.path("scanA/files.json"))); got != strconv.Itoa(size) {
					t.Fatalf("iteration %d: stat size %s, want %d", i, got, size)
				}
			}
		})
	}
}

// waitWhileCounting waits for the writers to finish, and fails if they
// do not or if the counter file (its first line, read on SOURCE) stays
// the same for stall.
func waitWhileCounting(t *testing.T, writers []*program, counter string, stall time.Duration) {
	t.Helper()
	last, moved := "", time.Now()
	for _, w := range writers {
		for w.running() {
			if b, err := os.ReadFile(counter); err == nil && firstLine(b) != last {
				last, moved = firstLine(b), time.Now()
			}
			if time.Since(moved) > stall {
				t.Fatalf("the counter has not moved from %q for %v", last, stall)
			}
			time.Sleep(100 * time.Millisecond)
		}
		w.waitWithin(t, waitLimit) // its exit status
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
