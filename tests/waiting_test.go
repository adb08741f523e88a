package tests

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
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
	w := startClient(t, "writer")
	w.mustOpen("w", d.path("scanA/files.json"), "w")
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
	w := startClient(t, "writer")
	w.mustOpen("w", f, "w")
	code, stderr, elapsed := runErr(t, "python3", "-c",
		"import os,sys\ntry:\n os.open(sys.argv[1], os.O_RDONLY|os.O_NONBLOCK)\nexcept BlockingIOError as e:\n print(e, file=sys.stderr); sys.exit(11)", f)
	if code != 11 {
		t.Fatalf("python3: exit %d, stderr %q; want EAGAIN", code, stderr)
	}
	if elapsed > 5*time.Second {
		t.Fatalf("EAGAIN took %v: it waited", elapsed)
	}
	w.close("w")
	// A reader holding the scan also makes a non-blocking writer fail.
	r := startClient(t, "reader")
	r.mustOpen("r", f, "r")
	c := startClient(t, "nonblocking writer")
	c.open("w", f, "wn")
	if res := c.result("w"); res.kind != "err" || res.errno != "EAGAIN" {
		t.Fatalf("O_WRONLY|O_NONBLOCK under a reader: %+v", res)
	}
	// ...but a non-blocking reader gets in.
	c.mustOpen("r", f, "rn")
}

// A cat waiting for its scan and killed with SIGINT returns, and leaves
// nothing queued: the next writer gets the scan at once once the holder
// leaves, and the scan ends up free.
func TestInterruptedWaitLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	f := d.path("scanA/files.json")
	w := startClient(t, "writer")
	w.mustOpen("w", f, "w")
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
	a, b := startClient(t, "A"), startClient(t, "B")
	a.mustOpen("r", f, "r")
	b.mustOpen("r", f, "r")
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
