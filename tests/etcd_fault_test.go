package tests

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"scanlockfs/internal/testutil"
)

// A host that dies (its mount killed with SIGKILL while a program holds
// a scan exclusively through it) leaves its etcd key behind only until
// its lease expires: the scan is free within TTL + 1 s, and the other
// host's writer gets it.
func TestEtcdKilledHostFreedWithinTTL(t *testing.T) {
	h := twoHosts(t, []string{"--no-passthrough"})
	a, b, view := h.a, h.b, h.view
	a.allowExit = true

	w := startClient(t, "writer")
	w.mustOpen("w", a.path("scanA/files.json"), "w")
	waitCluster(t, view, "scanA", "host A holds the scan", func(h, wt int) bool { return h == 1 })
	killed := time.Now()
	kill(t, a.cmd.Process)
	a.waitExit(t)
	waitCluster(t, view, "scanA", "host A's key expired", func(h, wt int) bool { return h+wt == 0 })
	if freed := time.Since(killed); freed > etcdTTL+time.Second {
		t.Fatalf("the dead host's lock was freed %v after the kill; want at most TTL + 1 s = %v", freed, etcdTTL+time.Second)
	}
	w2 := startClient(t, "writer2")
	w2.mustOpen("w", b.path("scanA/files.json"), "w")
	w2.close("w")

	// The dead mount: its program's file fails (ENOTCONN), then it goes.
	w.send("close w")
	w.await("w", false)
	w.result("w")
	_ = exec.Command("fusermount3", "-u", "-z", a.mnt).Run()
}

// A host stopped (SIGSTOP) for longer than the TTL loses its session;
// the other host gets the scan exclusively and writes. When the stopped
// host goes on (SIGCONT), the write of its program, whose handle was
// opened under the lost lock, fails with EIO instead of landing on the
// other host's data (without passthrough the daemon sees every write).
// The program closes it; a new open on the host works again.
func TestEtcdStoppedHostFencedAfterTTL(t *testing.T) {
	h := twoHosts(t, nil, "--no-passthrough")
	src, a, b, view := h.src, h.a, h.b, h.view

	w := startClient(t, "writerA")
	w.mustOpen("w", a.path("scanA/files.json"), "w")
	w.send("write w from-A-before")
	if r := w.result("w"); r.kind != "ok" {
		t.Fatalf("write on host A before the stop: %+v", r)
	}
	waitCluster(t, view, "scanA", "host A holds the scan", func(h, wt int) bool { return h == 1 })
	must(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	stopped := true
	defer func() {
		if stopped {
			_ = a.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	// Host B's writer waits for A's lease to expire, then writes.
	wb := startClient(t, "writerB")
	wb.mustOpen("w", b.path("scanA/files.json"), "w")
	wb.send("write w from-B")
	if r := wb.result("w"); r.kind != "ok" {
		t.Fatalf("write on host B: %+v", r)
	}
	wb.close("w")

	must(t, a.cmd.Process.Signal(syscall.SIGCONT))
	stopped = false
	w.send("write w from-A-after-the-stop")
	if r := w.result("w"); r.kind != "err" || r.errno != "EIO" {
		t.Fatalf("write through host A's handle opened under the lost lock: %+v, want EIO", r)
	}
	// (The open does not truncate: each write lands at offset 0.)
	if got, _ := os.ReadFile(src + "/scanA/files.json"); !strings.HasPrefix(string(got), "from-B") || strings.Contains(string(got), "after") {
		t.Fatalf("SOURCE has %q after host A was fenced; want host B's write on top, nothing of A's later write", got)
	}
	w.send("close w")
	w.await("w", false)
	w.result("w")
	// Host A noticed and said so; it serves new opens again.
	w.mustOpen("w2", a.path("scanA/files.json"), "r")
	w.close("w2")
	if !strings.Contains(a.stderr.String(), "etcd session lost") {
		t.Fatalf("host A's log does not report the lost session:\n%s", a.stderr)
	}
}

// A 3-member cluster with one member killed mid-run keeps serving: both
// hosts go on taking the scan in turn, and neither loses its session.
func TestEtcdClusterMemberKilled(t *testing.T) {
	t.Parallel()
	e := testutil.StartEtcd(t, 3)
	src := scanDB(t, "scanA")
	// A longer lease than the other tests: an election must fit in it.
	ttl := []string{"--etcd-ttl", "6s"}
	a, b := etcdHost(t, e, src, ttl...), etcdHost(t, e, src, ttl...)
	ca, cb := startClient(t, "hostA"), startClient(t, "hostB")
	round := func(i int) {
		ca.mustOpen("a", a.path("scanA/files.json"), "w")
		ca.close("a")
		cb.mustOpen("b", b.path("scanA/files.json"), "w")
		cb.close("b")
	}
	for i := range 5 {
		round(i)
	}
	e.Kill(0)
	for i := range 20 {
		round(i)
	}
	for _, d := range []*daemon{a, b} {
		if strings.Contains(d.stderr.String(), "etcd session lost") {
			t.Fatalf("a host lost its session when one member of three died:\n%s", d.stderr)
		}
	}
}
