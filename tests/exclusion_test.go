package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"scanlockfs/tests/internal/checker"
)

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
	for _, w := range writers {
		w.wait(t)
	}
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

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}
