package tests

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"scanlockfs/lockmgr"
	"scanlockfs/scanstatus"
)

// Locks that compose: a process that holds a scan directly on SOURCE
// (here `scanlockfs run`), and all its descendants, act through the mount
// as that holder. The mounts use a short timeout, so that a program that
// waited for its own holder fails with EBUSY instead of passing slowly.

// startJob runs `scanlockfs run MODE SOURCE SCAN -- sh -c SCRIPT`, whose
// script reports its steps on standard output (expect) and waits for a
// line on standard input where it reads one.
func startJob(t *testing.T, mode, src, scan, script string) *pyProc {
	t.Helper()
	return startLineProc(t, "scanlockfs run", exec.Command(binScanlockfs, "run", mode, "--timeout", "0", src, scan, "--", "sh", "-c", script))
}

// finishJob closes the script's input (a waiting `read || :` ends it)
// and returns the time just before, after checking that the job
// succeeded.
func finishJob(t *testing.T, j *pyProc) int64 {
	t.Helper()
	at := now()
	j.stdin.Close()
	if err := j.wait(); err != nil {
		t.Fatalf("scanlockfs run: %v: %s", err, j.err.String())
	}
	return at
}

// The pipeline `cat a | tee b` under `scanlockfs run --exclusive`: both
// sides of the pipe are children of the shell that run started, and act
// under run's lock; a mount user that wants the scan meanwhile waits
// until run releases it.
func TestRunExclusivePipelineActsAsHolder(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src, "--timeout", "3s")
	j := startJob(t, "--exclusive", src, "scanA",
		"cat "+d.path("scanA/files.json")+" | tee "+d.path("scanA/b")+" >/dev/null && echo piped && { read x || :; }")
	j.expect("piped")
	if b, err := os.ReadFile(d.srcPath("scanA/b")); err != nil || string(b) != "files of scanA\n" {
		t.Fatalf("tee's output on SOURCE: %q, %v", b, err)
	}

	reader := startClient(t, "reader")
	reader.open("r", d.path("scanA/b"), "r")
	d.waitQueued(t, reader.pid())
	released := finishJob(t, j)
	r := reader.result("r")
	if r.kind != "ok" || r.at < released {
		t.Fatalf("mount reader: %s %s at %d; want it granted after run released the scan (%d)", r.kind, r.errno, r.at, released)
	}
}

// rsync -a inside one scan under `scanlockfs run --exclusive`: rsync's
// receiver and generator are processes of their own, descendants of run.
func TestRunExclusiveRsyncInsideScan(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	must(t, os.MkdirAll(src+"/scanA/x/sub", 0o755))
	for i, name := range []string{"a.jpg", "b.jpg", "sub/c.json"} {
		must(t, os.WriteFile(src+"/scanA/x/"+name, bytes.Repeat([]byte{byte('a' + i)}, 10000*(i+1)), 0o644))
	}
	d := mountT(t, src, "--timeout", "3s")
	out, err := exec.Command(binScanlockfs, "run", "--exclusive", src, "scanA", "--",
		"rsync", "-a", d.path("scanA/x")+"/", d.path("scanA/y")+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("rsync under run: %v: %s", err, out)
	}
	for _, name := range []string{"a.jpg", "b.jpg", "sub/c.json"} {
		want, err := os.ReadFile(src + "/scanA/x/" + name)
		must(t, err)
		if got, err := os.ReadFile(src + "/scanA/y/" + name); err != nil || !bytes.Equal(got, want) {
			t.Errorf("y/%s: %d bytes, %v; want a copy of x/%s (%d bytes)", name, len(got), err, name, len(want))
		}
	}
	waitFree(t, src, "scanA")
}

// tar under `scanlockfs run --shared` is a consistent snapshot: a writer
// that came before tar waits until run releases the scan, while tar,
// acting under run's shared lock, reads past it; the archive has the
// scan as it was.
func TestRunSharedTarIsSnapshot(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src, "--timeout", "3s")
	archive := t.TempDir() + "/scanA.tar"
	j := startJob(t, "--shared", src, "scanA",
		"echo held && read x && tar -c -f "+archive+" -C "+d.mnt+" scanA && echo tarred && { read y || :; }")
	j.expect("held")

	writer := startClient(t, "writer")
	writer.open("w", d.path("scanA/files.json"), "wt")
	d.waitQueued(t, writer.pid())
	j.send("")
	j.expect("tarred")
	d.waitQueued(t, writer.pid()) // still waiting after tar
	released := finishJob(t, j)
	w := writer.result("w")
	if w.kind != "ok" || w.at < released {
		t.Fatalf("writer: %s %s at %d; want it granted after run released the scan (%d)", w.kind, w.errno, w.at, released)
	}
	writer.close("w")

	out, err := exec.Command("tar", "-x", "-O", "-f", archive, "scanA/files.json").CombinedOutput()
	if err != nil || string(out) != "files of scanA\n" {
		t.Fatalf("files.json in the archive: %q, %v; want the content before the writer", out, err)
	}
	if b, err := os.ReadFile(d.srcPath("scanA/files.json")); err != nil || len(b) != 0 {
		t.Fatalf("files.json after the writer truncated it: %q, %v", b, err)
	}
}

// A holder killed while its family still has files of the scan open
// through the mount does not leave them unprotected: the daemon takes the
// scan's lock on SOURCE for them as soon as the holder's lock is gone,
// and a direct user of SOURCE waits until the family closed them.
func TestKilledHolderLeavesFamilyCovered(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src, "--timeout", "3s")
	j := startJob(t, "--exclusive", src, "scanA",
		"exec 3>>"+d.path("scanA/files.json")+" && echo opened && read x && exec 3>&- && echo closed && { read y || :; }")
	j.expect("opened")
	must(t, j.cmd.Process.Kill()) // run; its shell goes on
	waitHeldBy(t, src, "scanA", d.cmd.Process.Pid)

	direct := startClient(t, "SOURCE user")
	direct.send("lock l %s scanA exclusive", src)
	started := direct.await("l", false).at
	closing := now()
	j.send("")
	j.expect("closed")
	r := direct.result("l")
	if r.kind != "ok" || !(started < closing && closing < r.at) {
		t.Fatalf("SOURCE user's lock: %s %s, asked at %d, granted at %d; want it granted after the shell closed its file (%d)",
			r.kind, r.errno, started, r.at, closing)
	}
}

// waitHeldBy polls until process pid holds scan exclusively on SOURCE.
func waitHeldBy(t *testing.T, src, scan string, pid int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		st := lockState(t, src, scan)
		for _, h := range st.Holders {
			if h.PID == pid && h.Mode == lockmgr.Exclusive {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("scan %s: holders %+v; want pid %d to hold it exclusively", scan, st.Holders, pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// `scanlockfs run` waiting for a scan that a mount user holds is a waiter
// in the mount's status view and in `scanlockfs status`, until it stops
// waiting (here: it is killed).
func TestRunWaiterIsVisible(t *testing.T) {
	t.Parallel()
	holder := startClient(t, "holder")
	src := scanDB(t, "scanA")
	d := mountT(t, src)
	holder.mustOpen("w", d.path("scanA/files.json"), "w")
	run := startProgram(t, binScanlockfs, "run", "--exclusive", src, "scanA", "--", "true")
	pid := run.cmd.Process.Pid
	isRun := func(w scanstatus.Waiter) bool {
		return w.PID == pid && w.Mode == "exclusive" && w.Where == scanstatus.WhereSource
	}
	d.waitInfo(t, "scanA", "run as a waiter", func(doc scanstatus.InfoDoc) bool { return slices.ContainsFunc(doc.Waiters, isRun) })
	out, err := exec.Command(binScanlockfs, "status", "--json", src, "scanA").Output()
	if err != nil || !bytes.Contains(out, []byte(`"pid": `+strconv.Itoa(pid))) {
		t.Fatalf("scanlockfs status --json: %v\n%s\nwant the waiting run (pid %d)", err, out, pid)
	}
	must(t, run.cmd.Process.Kill())
	<-run.done
	d.waitInfo(t, "scanA", "no waiter once run is gone", func(doc scanstatus.InfoDoc) bool { return !slices.ContainsFunc(doc.Waiters, isRun) })
	holder.close("w") // before the unmount (cleanups run in reverse order)
}
