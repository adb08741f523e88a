package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"scanlockfs/scanstatus"
)

// A writer holding a scan through the mount and a reader waiting behind
// it show in the scan's .info (cat), in status.json (python3's json) and
// in the metrics gauges, with their pid, command, mode and path; the
// reader becomes the holder when the writer closes; the scan is free
// and unlisted once both are gone.
func TestStatusShowsMountHoldersAndWaiters(t *testing.T) {
	t.Parallel()
	// The reader waits through all the checks below, python3's start-ups
	// included: on a loaded machine that can outlast the default timeout.
	d := mountT(t, scanDB(t, "scanA", "scanB"), "--log-level", "debug", "--timeout", "10m")
	f := d.path("scanA/files.json")
	w, r := startClient(t, "writer"), startClient(t, "reader")
	w.mustOpen("w", f, "w")
	r.open("r", f, "r")
	d.waitQueued(t, r.pid())

	info := d.catInfo(t, "scanA")
	if info.ScanID != "scanA" || info.State != "exclusive" || info.Error != "" || len(info.Holders) != 1 || len(info.Waiters) != 1 {
		t.Fatalf("scanA.info with a writer and a waiting reader: %+v", info)
	}
	checkEntry(t, "writer", info.Holders[0].Entry, w.pid(), "exclusive", scanstatus.WhereMount, "scanA/files.json")
	checkEntry(t, "reader", info.Waiters[0].Entry, r.pid(), "shared", scanstatus.WhereMount, "scanA/files.json")
	if u := info.Holders[0].User; u != userName() {
		t.Errorf("writer's user %q, want %q", u, userName())
	}
	if info.Holders[0].HeldForSeconds == nil || info.Waiters[0].WaitedSeconds == nil || *info.Waiters[0].WaitedSeconds > *info.Holders[0].HeldForSeconds {
		t.Errorf("held for %v, waited %v: the reader came after the writer", info.Holders[0].HeldForSeconds, info.Waiters[0].WaitedSeconds)
	}

	if ls := d.lsLocks(t); !slices.Equal(ls, []string{"metrics", "scanA.info", "status.json"}) {
		t.Errorf("ls .locks: %q", ls)
	}
	if free := d.catInfo(t, "scanB"); free.State != "free" || len(free.Holders)+len(free.Waiters) != 0 {
		t.Errorf("scanB.info of a free scan: %+v", free)
	}
	// No .info for what is not a scan, nor other names (a valid scan id's
	// .lock file exists: compose_flock_test.go).
	for _, name := range []string{"scanC.info", ".x.info", "users.json.info", ".x.lock", "scanA", "x"} {
		if _, err := os.Stat(d.statusPath(name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat .locks/%s: %v, want ENOENT", name, err)
		}
	}
	if got := pythonLoads(t, d.statusPath("status.json")); got != "scanA 1 1\n" {
		t.Errorf("python3 json.load of status.json: %q", got)
	}
	if got := pythonLoads(t, d.statusPath("scanA.info")); got != "scanA 1 1\n" {
		t.Errorf("python3 json.load of scanA.info: %q", got)
	}
	st := d.mountStatus(t)
	if st.Source != d.src || st.Mountpoint != d.mnt || st.PID != d.cmd.Process.Pid || st.TimeoutSeconds != 600 || st.Error != "" {
		t.Errorf("status.json header: %+v", st)
	}
	if len(st.Scans) != 1 || st.Scans[0].Holders[0].PID != w.pid() || st.Scans[0].Waiters[0].PID != r.pid() {
		t.Errorf("status.json scans: %+v", st.Scans)
	}
	fams := d.metrics(t)
	if h, wt := metricValue(t, fams, "scanlockfs_lock_holders"), metricValue(t, fams, "scanlockfs_lock_waiters"); h != 1 || wt != 1 {
		t.Errorf("gauges: %v holders, %v waiters; want 1 and 1", h, wt)
	}

	// What scanlockfs status uses to find the mount and its programs.
	mounts, err := scanstatus.FindMounts(d.src)
	if err != nil || !slices.Contains(mounts, d.mnt) {
		t.Errorf("FindMounts(%s) = %q, %v", d.src, mounts, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if ms, err := scanstatus.ReadMount(ctx, d.mnt); err != nil || len(ms.Scans) != 1 || ms.Scans[0].ScanID != "scanA" {
		t.Errorf("ReadMountStatus: %+v, %v", ms, err)
	}

	checkStatusCommand(t, d, w.pid(), r.pid())

	w.close("w")
	if res := r.result("r"); res.kind != "ok" {
		t.Fatalf("reader after the writer closed: %s", res.errno)
	}
	info = d.waitInfo(t, "scanA", "the reader as the only holder", func(doc scanstatus.InfoDoc) bool {
		return doc.State == "shared" && len(doc.Holders) == 1 && len(doc.Waiters) == 0
	})
	checkEntry(t, "reader", info.Holders[0].Entry, r.pid(), "shared", scanstatus.WhereMount, "scanA/files.json")

	r.close("r")
	d.waitInfo(t, "scanA", "a free scan", func(doc scanstatus.InfoDoc) bool {
		return doc.State == "free" && len(doc.Holders)+len(doc.Waiters) == 0
	})
	if ls := d.lsLocks(t); slices.Contains(ls, "scanA.info") {
		t.Errorf("ls .locks lists a free scan: %q", ls)
	}
	if st := d.mountStatus(t); len(st.Scans) != 0 {
		t.Errorf("status.json of an idle mount: %+v", st.Scans)
	}
}

// Processes that lock SOURCE directly show with where "source": a
// lockmgr user (slclient) and the Python plantdb peer, with their pid,
// mode and the time from their .info files; a mount open waiting behind
// the lockmgr user shows as a waiter of the mount. Both disappear after
// release.
func TestStatusShowsSourceHolders(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA", "scanB"), "--log-level", "debug")
	if st := d.mountStatus(t); st.TimeoutSeconds != 30 {
		t.Errorf("status.json of a mount with the default timeout: timeout_seconds %v, want 30", st.TimeoutSeconds)
	}

	direct := startClient(t, "lockmgr user")
	direct.send("lock l %s scanA exclusive", d.src)
	if res := direct.result("l"); res.kind != "ok" {
		t.Fatalf("lockmgr lock: %s", res.errno)
	}
	// Since comes from the .info file, written a moment after the flock.
	info := d.waitInfo(t, "scanA", "the lockmgr user with its time", func(doc scanstatus.InfoDoc) bool {
		return len(doc.Holders) == 1 && doc.Holders[0].Since != nil
	})
	checkEntry(t, "lockmgr user", info.Holders[0].Entry, direct.pid(), "exclusive", scanstatus.WhereSource, "")
	if info.State != "exclusive" || info.Holders[0].Owner != "" {
		t.Errorf("scanA.info: %+v", info)
	}
	if !slices.Contains(d.lsLocks(t), "scanA.info") {
		t.Errorf("ls .locks does not list a scan held on SOURCE")
	}

	reader := startClient(t, "mount reader")
	reader.open("r", d.path("scanA/files.json"), "r")
	d.waitQueued(t, reader.pid())
	info = d.catInfo(t, "scanA")
	if len(info.Waiters) != 1 {
		t.Fatalf("scanA.info with a mount reader waiting: %+v", info)
	}
	checkEntry(t, "mount reader", info.Waiters[0].Entry, reader.pid(), "shared", scanstatus.WhereMount, "scanA/files.json")

	direct.send("unlock l")
	if res := direct.result("l"); res.kind != "ok" {
		t.Fatalf("lockmgr unlock: %s", res.errno)
	}
	if res := reader.result("r"); res.kind != "ok" {
		t.Fatalf("mount reader after the release: %s", res.errno)
	}
	reader.close("r")
	d.waitInfo(t, "scanA", "a free scan", func(doc scanstatus.InfoDoc) bool { return doc.State == "free" })

	// The plantdb protocol peer, shared.
	peer := exec.Command("python3", plantdbPeer(t), "hold", d.src, "scanB", "--mode", "shared", "--user", "plantdb-peer")
	stdin, err := peer.StdinPipe()
	must(t, err)
	stdout, err := peer.StdoutPipe()
	must(t, err)
	must(t, peer.Start())
	t.Cleanup(func() {
		stdin.Close()
		_ = peer.Wait()
	})
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || !strings.HasPrefix(line, "granted ") {
		t.Fatalf("plantdb peer: %q, %v", line, err)
	}
	info = d.waitInfo(t, "scanB", "the plantdb peer with its time", func(doc scanstatus.InfoDoc) bool {
		return len(doc.Holders) == 1 && doc.Holders[0].Since != nil
	})
	checkEntry(t, "plantdb peer", info.Holders[0].Entry, peer.Process.Pid, "shared", scanstatus.WhereSource, "")
	// The peer's .info names its user; any member of the lock directory's
	// group could write that, so it is a claim beside the real user.
	if info.State != "shared" || info.Holders[0].ClaimedUser != "plantdb-peer" || info.Holders[0].User != userName() {
		t.Errorf("scanB.info: %+v", info)
	}
	if st := d.mountStatus(t); len(st.Scans) != 1 || st.Scans[0].ScanID != "scanB" {
		t.Errorf("status.json: %+v", st.Scans)
	}
	if _, err := io.WriteString(stdin, "release\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := out.ReadString('\n'); err != nil || !strings.HasPrefix(line, "released ") {
		t.Fatalf("plantdb peer: %q, %v", line, err)
	}
	d.waitInfo(t, "scanB", "a free scan", func(doc scanstatus.InfoDoc) bool { return doc.State == "free" })
	deadline := time.Now().Add(waitLimit)
	for slices.Contains(d.lsLocks(t), "scanB.info") {
		if time.Now().After(deadline) {
			t.Fatal("ls .locks still lists scanB after the peer released it")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkStatusCommand: `scanlockfs status SOURCE` shows the programs of
// the running mount in place of its daemon, in the model of the status
// view (where "mount", with the path), as JSON and as a table.
func checkStatusCommand(t *testing.T, d *daemon, writer, reader int) {
	t.Helper()
	code, out, stderr := runCode(t, binScanlockfs, "status", "--json", d.src)
	var doc scanstatus.SourceDoc
	decodeStrict(t, "status --json", []byte(out), &doc)
	if code != 0 || doc.Source != d.src || len(doc.Scans) != 1 || doc.Scans[0].ScanID != "scanA" || doc.Scans[0].State != "exclusive" ||
		len(doc.Scans[0].Holders) != 1 || len(doc.Scans[0].Waiters) != 1 {
		t.Fatalf("status --json with a writer and a waiting reader: exit %d\n%s%s", code, out, stderr)
	}
	checkEntry(t, "status writer", doc.Scans[0].Holders[0].Entry, writer, "exclusive", scanstatus.WhereMount, "scanA/files.json")
	checkEntry(t, "status reader", doc.Scans[0].Waiters[0].Entry, reader, "shared", scanstatus.WhereMount, "scanA/files.json")
	code, out, stderr = runCode(t, binScanlockfs, "status", d.src)
	if code != 0 || strings.Count(out, "scanA/files.json") != 2 || strings.Count(out, " mount ") != 2 {
		t.Errorf("status table with a writer and a waiting reader: exit %d\n%s%s", code, out, stderr)
	}
}

// The counters move by exactly what programs did: three cat (shared) and
// two appends (exclusive) add three and two grants and five waits and
// opens; reading the status view in between adds nothing, because it
// takes no lock; an open that times out adds one EBUSY and one timeout.
func TestStatusMetricsCountGrantsAndTimeouts(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--timeout", "300ms")
	f := d.path("scanA/files.json")
	before := d.metrics(t)
	for range 3 {
		run(t, "cat", f)
		run(t, "cat", d.statusPath("scanA.info"), d.statusPath("status.json"), d.statusPath("metrics"))
	}
	for range 2 {
		run(t, "sh", "-c", "echo more >> "+f)
	}
	after := d.metrics(t)
	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"scanlockfs_lock_grants_total", []string{"mode", "shared"}, 3},
		{"scanlockfs_lock_grants_total", []string{"mode", "exclusive"}, 2},
		{"scanlockfs_lock_wait_seconds", nil, 5},
		{"scanlockfs_opens_total", nil, 5},
		{"scanlockfs_lock_errno_total", []string{"errno", "EBUSY"}, 0},
	} {
		if got := metricValue(t, after, c.name, c.labels...) - metricValue(t, before, c.name, c.labels...); got != c.delta {
			t.Errorf("%s%q grew by %v, want %v", c.name, c.labels, got, c.delta)
		}
	}

	w := startWriter(t, f)
	code, stderr, _ := runErr(t, "cat", f)
	if code == 0 || !strings.Contains(strings.ToLower(stderr), syscall.EBUSY.Error()) {
		t.Fatalf("cat under a writer: exit %d, %q; want EBUSY", code, stderr)
	}
	fams := d.metrics(t)
	if got := metricValue(t, fams, "scanlockfs_lock_errno_total", "errno", "EBUSY"); got != 1 {
		t.Errorf("EBUSY returned %v times, want 1", got)
	}
	if got := metricValue(t, fams, "scanlockfs_lock_refusals_total", "reason", "timeout"); got != 1 {
		t.Errorf("%v timeouts, want 1", got)
	}
	if got := metricValue(t, fams, "scanlockfs_lock_holders"); got != 1 {
		t.Errorf("%v holders with one writer", got)
	}
	w.close("w")
	d.waitMetric(t, 0, "scanlockfs_lock_holders")
}

// EAGAIN (O_NONBLOCK), EINTR (a waiting cat interrupted) and EDEADLK
// (two readers upgrading) are each counted once, and the waiters gauge
// shows a queued request while it waits.
func TestStatusMetricsCountRefusals(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	f := d.path("scanA/files.json")
	a, b := twoReaders(t, f, "reader A", "reader B")

	nb := startClient(t, "nonblocking writer")
	nb.open("w", f, "wn")
	if res := nb.result("w"); res.kind != "err" || res.errno != "EAGAIN" {
		t.Fatalf("O_NONBLOCK writer under readers: %+v", res)
	}

	cat := startProgram(t, "sh", "-c", "exec cat >> "+f)
	d.waitQueued(t, cat.cmd.Process.Pid)
	if got := metricValue(t, d.metrics(t), "scanlockfs_lock_waiters"); got != 1 {
		t.Errorf("waiters gauge %v with one queued writer", got)
	}
	must(t, cat.cmd.Process.Signal(os.Interrupt))
	select {
	case <-cat.done:
	case <-time.After(waitLimit):
		t.Fatal("the waiting shell did not return after SIGINT")
	}
	d.waitMetric(t, 1, "scanlockfs_lock_errno_total", "errno", "EINTR")
	d.waitMetric(t, 0, "scanlockfs_lock_waiters")

	a.open("w", f, "w")
	d.waitQueued(t, a.pid())
	b.open("w", f, "w")
	if res := b.result("w"); res.kind != "err" || res.errno != "EDEADLK" {
		t.Fatalf("second upgrade: %+v, want EDEADLK", res)
	}
	b.close("r")
	if res := a.result("w"); res.kind != "ok" {
		t.Fatalf("first upgrade: %+v", res)
	}
	fams := d.metrics(t)
	for errno, want := range map[string]float64{"EAGAIN": 1, "EINTR": 1, "EDEADLK": 1, "EBUSY": 0} {
		if got := metricValue(t, fams, "scanlockfs_lock_errno_total", "errno", errno); got != want {
			t.Errorf("%s returned %v times, want %v", errno, got, want)
		}
	}
	for reason, want := range map[string]float64{"would_block": 1, "cancelled": 1, "timeout": 0} {
		if got := metricValue(t, fams, "scanlockfs_lock_refusals_total", "reason", reason); got != want {
			t.Errorf("refusals for %s: %v, want %v", reason, got, want)
		}
	}
	// The mount retries an apparent deadlock for a moment (a RELEASE may be
	// late), and the lock manager counts every attempt it refused.
	if got := metricValue(t, fams, "scanlockfs_lock_refusals_total", "reason", "deadlock"); got < 1 {
		t.Errorf("refusals for deadlock: %v, want at least 1", got)
	}
}

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
	py := startPy(t, "snapshot reader", nil, `import json, os, sys
f = open(sys.argv[1])
print("opened", flush=True)
sys.stdin.readline()
os.stat(sys.argv[1])
d = json.loads(f.read())
print("read", d["state"], len(d["waiters"]))`, d.statusPath("scanA.info"))
	py.expect("opened")

	w.close("w")
	for i, c := range cats {
		if got := c.wait(t); got != "files of scanA\n" {
			t.Fatalf("cat %d read %q", i, got)
		}
	}
	d.waitInfo(t, "scanA", "a free scan", func(doc scanstatus.InfoDoc) bool { return doc.State == "free" })
	py.send("go")
	if f := py.expect("read"); strings.Join(f[1:], " ") != "exclusive "+strconv.Itoa(waiting) {
		t.Fatalf("python3 read from its earlier open: %q; want the snapshot of that open", f)
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
