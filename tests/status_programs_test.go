package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"scanlockfs/scanstatus"
)

// The brief's worst case: a scan locked exclusively and 50 opens queued
// behind it. cat of its .info returns at once and shows the holder and
// the 50 waiters; then the usual tools read the whole document (about
// 15 kB, several read(2) calls, while stat says size 0); an open keeps
// its snapshot after the state changed; and the 50 opens all complete
// once the writer leaves.
func TestStatusReadWhileFiftyWait(t *testing.T) {
	t.Parallel()
	const waiting = 50
	d := mountT(t, scanDB(t, "scanA"))
	f := d.path("scanA/files.json")
	w := startWriter(t, f)
	cats := make([]*program, waiting)
	for i := range cats {
		cats[i] = startProgram(t, "cat", f)
	}
	info := d.waitInfo(t, "scanA", strconv.Itoa(waiting)+" waiters", func(doc scanstatus.InfoDoc) bool {
		return len(doc.Waiters) == waiting
	})

	// cat, with a short budget: reading never waits for the scan.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "cat", d.statusPath("scanA.info")).Output()
	if err != nil {
		t.Fatalf("cat scanA.info while %d opens wait: %v after %v", waiting, err, time.Since(start))
	}
	t.Logf("cat of a %d-byte .info with %d waiters took %v", len(out), waiting, time.Since(start))
	var doc scanstatus.InfoDoc
	decodeStrict(t, "scanA.info", out, &doc)
	if doc.State != "exclusive" || len(doc.Holders) != 1 || doc.Holders[0].PID != w.pid() || len(doc.Waiters) != waiting {
		t.Fatalf("scanA.info: state %s, %d holders, %d waiters", doc.State, len(doc.Holders), len(doc.Waiters))
	}
	pids := map[int]bool{}
	for _, c := range cats {
		pids[c.cmd.Process.Pid] = true
	}
	for _, wt := range doc.Waiters {
		if !pids[wt.PID] || wt.Command != "cat" || wt.Mode != "shared" || wt.Where != scanstatus.WhereMount || wt.Path != "scanA/files.json" {
			t.Errorf("waiter %+v is not one of the cats", wt.Entry)
		}
		delete(pids, wt.PID)
	}
	if len(out) < 8192 || len(info.Waiters) != waiting {
		t.Fatalf("document of %d bytes: too small to need several reads", len(out))
	}
	var st os.FileInfo
	if st, err = os.Stat(d.statusPath("scanA.info")); err != nil || st.Size() != 0 {
		t.Fatalf("stat scanA.info: %v, %v; want size 0", st, err)
	}

	t.Run("programs", func(t *testing.T) { readWithPrograms(t, d, len(out), waiting) })

	// An open keeps the snapshot it rendered: python3 opens the file now
	// and reads it after the writer and the cats are gone.
	py := exec.Command("python3", "-c", `import json, os, sys
f = open(sys.argv[1])
print("opened", flush=True)
sys.stdin.readline()
os.stat(sys.argv[1])
d = json.loads(f.read())
print(d["state"], len(d["waiters"]))`, d.statusPath("scanA.info"))
	pyIn, err := py.StdinPipe()
	must(t, err)
	pyOut, err := py.StdoutPipe()
	must(t, err)
	must(t, py.Start())
	// Closing its standard input ends python3 also when the test fails
	// before it gets its command; a bare Wait would hang until the timeout.
	defer func() {
		pyIn.Close()
		_ = py.Wait()
	}()
	pyLines := bufio.NewReader(pyOut)
	if line, err := pyLines.ReadString('\n'); err != nil || line != "opened\n" {
		t.Fatalf("python3: %q, %v", line, err)
	}

	w.close("w")
	for i, c := range cats {
		if got := c.wait(t); got != "files of scanA\n" {
			t.Fatalf("cat %d read %q", i, got)
		}
	}
	d.waitInfo(t, "scanA", "a free scan", func(doc scanstatus.InfoDoc) bool { return doc.State == "free" })
	if _, err := io.WriteString(pyIn, "go\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := pyLines.ReadString('\n'); err != nil || line != "exclusive "+strconv.Itoa(waiting)+"\n" {
		t.Fatalf("python3 read from its earlier open: %q, %v; want the snapshot of that open", line, err)
	}
}

// readWithPrograms reads .locks/scanA.info (size about n, with a holder
// and waiting waiters) with the tools the issue names; each must read
// the whole document although stat reports size 0.
func readWithPrograms(t *testing.T, d *daemon, n, waiting int) {
	info := d.statusPath("scanA.info")
	entries := strconv.Itoa(1+waiting) + "\n"
	if got := pythonLoads(t, info); got != "scanA 1 "+strconv.Itoa(waiting)+"\n" {
		t.Errorf("python3 json.load: %q", got)
	}
	if got := run(t, "grep", "-c", `"pid":`, info); got != entries {
		t.Errorf("grep -c pid: %q, want %q", got, entries)
	}
	if got := run(t, "tail", "-n", "2", info); got != "  \"error\": \"\"\n}\n" {
		t.Errorf("tail -n 2: %q", got)
	}
	// wc -c trusts a size that is not a multiple of the page size; with
	// size 0 it reads. Every render differs by a few bytes (times).
	if got, err := strconv.Atoi(strings.TrimSpace(run(t, "sh", "-c", "wc -c < "+info))); err != nil || got < n*9/10 || got > n*11/10 {
		t.Errorf("wc -c: %d, %v; cat read %d bytes", got, err, n)
	}
	for name, args := range map[string][]string{
		"dd bs=100": {"dd", "if=" + info, "bs=100", "status=none"},
		"cp":        {"sh", "-c", `cp "$1" "$2" && cat "$2"`, "sh", info, filepath.Join(t.TempDir(), "copy.json")},
		"head -c":   {"head", "-c", "1000000", info},
	} {
		var doc scanstatus.InfoDoc
		decodeStrict(t, name, []byte(run(t, args[0], args[1:]...)), &doc)
		if len(doc.Waiters) != waiting {
			t.Errorf("%s: %d waiters", name, len(doc.Waiters))
		}
	}
	// jq and less are not needed by the suite; use them where installed.
	if _, err := exec.LookPath("jq"); err == nil {
		if got := run(t, "jq", ".waiters | length", info); got != strconv.Itoa(waiting)+"\n" {
			t.Errorf("jq: %q", got)
		}
	} else {
		t.Log("jq not installed: not tried")
	}
	if _, err := exec.LookPath("less"); err == nil {
		// less on a terminal (script(1) gives it one), told to go to the
		// end (+G) and then to quit: it shows the last line and (END).
		cmd := exec.Command("script", "-qfec", "stty rows 20 cols 120; less -X +G "+info, "/dev/null")
		cmd.Env = append(os.Environ(), "TERM=xterm", "LESS=", "LESSOPEN=")
		cmd.Stdin = strings.NewReader("q")
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		done := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
				_ = cmd.Process.Kill()
			case <-done:
			}
		}()
		out, err := cmd.Output()
		close(done)
		screen := strings.ReplaceAll(string(out), "\r", "")
		if err != nil || !strings.Contains(screen, "\"error\": \"\"\n}\n") || !strings.Contains(screen, "(END)") {
			t.Errorf("less +G: %v; screen ends with %q", err, screen[max(0, len(screen)-300):])
		}
	} else {
		t.Log("less not installed: not tried")
	}
	var v any
	if err := json.Unmarshal([]byte(run(t, "cat", info)), &v); err != nil {
		t.Errorf("cat: %v", err)
	}
}
