package fusefs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
	"scanlockfs/lockmgr"
)

// otherThread returns the id of a thread of this process that is not the
// leader, running until stop is closed.
func otherThread(t testing.TB) (tid int, stop func()) {
	t.Helper()
	var dones []chan struct{}
	stopAll := func() {
		for _, d := range dones {
			close(d)
		}
	}
	// A goroutine that lands on the main thread keeps it locked, so that
	// the next one gets another thread.
	for range 4 {
		ch := make(chan int)
		done := make(chan struct{})
		dones = append(dones, done)
		go func() {
			runtime.LockOSThread() // keep the thread: it must not exit or be reused
			ch <- unix.Gettid()
			<-done
		}()
		if tid = <-ch; tid != os.Getpid() {
			return tid, stopAll
		}
	}
	stopAll()
	t.Skip("goroutines keep landing on the main thread")
	return 0, nil
}

func TestProcessOfLeaderAndThread(t *testing.T) {
	pid := os.Getpid()
	st, err := procfs.ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	want := process{pid: pid, key: lockmgr.ProcessKey(pid, st.StartTime)}
	if got, ok := processOf(pid); !ok || got != want {
		t.Errorf("processOf(leader %d) = %+v, %v; want %+v", pid, got, ok, want)
	}
	tid, stop := otherThread(t)
	defer stop()
	if got, ok := processOf(tid); !ok || got != want {
		t.Errorf("processOf(thread %d) = %+v, %v; want %+v", tid, got, ok, want)
	}
	if !pidfdOpenWorks.Load() {
		t.Error("looking up a thread that is not a leader turned pidfd_open off for good")
	}
	if got := tgidOf(tid); got != pid {
		t.Errorf("tgidOf(%d) = %d; want %d", tid, got, pid)
	}
	if _, ok := processOf(1 << 30); ok {
		t.Error("a process that does not exist was identified")
	}
}

func TestCallerOwnerIsTheProcess(t *testing.T) {
	pid := os.Getpid()
	st, err := procfs.ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	tid, stop := otherThread(t)
	defer stop()
	ctx := &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Uid: uint32(os.Getuid())}, Pid: uint32(tid)}}
	o := callerOwner(ctx, "scan/f")
	if o.PID != pid || o.Key != lockmgr.ProcessKey(pid, st.StartTime) || o.Note != "scan/f" || o.User == "" {
		t.Errorf("callerOwner = %+v, want the process %d started at %d", o, pid, st.StartTime)
	}
	// Requests without a process get an owner each: never reentrant.
	a := callerOwner(&fuse.Context{}, "")
	b := callerOwner(context.Background(), "")
	if a.Key == b.Key {
		t.Errorf("two kernel requests share owner %q", a.Key)
	}
	// So do requests of a process that is gone.
	gone := &fuse.Context{Caller: fuse.Caller{Pid: 1 << 30}}
	if a, b := callerOwner(gone, ""), callerOwner(gone, ""); a.Key == b.Key || a.PID != 1<<30 {
		t.Errorf("two requests of a gone process: %+v, %+v", a, b)
	}
}

// The mapping is on the path of every open. Run with
// go test -bench TGID ./fusefs
func BenchmarkTGIDLeader(b *testing.B) {
	pid := os.Getpid()
	for b.Loop() {
		processOf(pid)
	}
}

func BenchmarkTGIDThread(b *testing.B) {
	tid, stop := otherThread(b)
	defer stop()
	for b.Loop() {
		processOf(tid)
	}
}

func BenchmarkTGIDProcStatus(b *testing.B) {
	pid := os.Getpid()
	for b.Loop() {
		procfs.ReadStatus(pid)
	}
}

func BenchmarkTGIDProcStat(b *testing.B) {
	pid := os.Getpid()
	for b.Loop() {
		procfs.ReadStat(pid)
	}
}

// TestLeaderCacheForgetsExitedProcess: a cached leader counts only while
// its process exists; once it is reaped (and its id free for reuse), the
// entry is dropped and its pidfd closed, and the exited process's owner
// key never answers for the pid again.
func TestLeaderCacheForgetsExitedProcess(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Process.Kill()
	first := callerOwner(&fuse.Context{Caller: fuse.Caller{Pid: uint32(pid)}}, "")
	st, err := procfs.ReadStat(pid)
	if err != nil || first.PID != pid || first.Key != lockmgr.ProcessKey(pid, st.StartTime) {
		t.Fatalf("callerOwner(sleep %d) = %+v; stat %+v, %v", pid, first, st, err)
	}
	if !leaders.holds(pid) {
		t.Fatalf("leader %d is not cached after a lookup", pid)
	}
	leaders.mu.RLock()
	fd := leaders.m[pid].fd
	leaders.mu.RUnlock()
	cmd.Process.Kill()
	cmd.Wait()
	if leaders.holds(pid) {
		t.Fatalf("reaped process %d still counts as a cached leader", pid)
	}
	// What a request with that pid gets now: the process that has the
	// pid by now (rarely any), never the exited one.
	p, err := leaders.lookup(pid)
	if err == nil && p.key == first.Key {
		t.Fatalf("the exited process's key %q still answers for pid %d", p.key, pid)
	}
	leaders.mu.RLock()
	e, still := leaders.m[pid]
	leaders.mu.RUnlock()
	if still && (e.fd == fd || e.p.key == first.Key) {
		t.Errorf("the entry of reaped process %d was not dropped", pid)
	}
}

// Without pidfds (Linux < 5.3, seccomp) the process is read from /proc
// on each request, with the same key.
func TestProcessOfWithoutPidfd(t *testing.T) {
	want, ok := processOf(os.Getpid())
	if !ok {
		t.Fatal("this process is not identified")
	}
	tid, stop := otherThread(t)
	defer stop()
	if !pidfdOpenWorks.Load() {
		t.Skip("pidfd_open does not work here: the other tests cover this path")
	}
	pidfdOpenWorks.Store(false)
	defer pidfdOpenWorks.Store(true)
	for _, id := range []int{os.Getpid(), tid} {
		if got, ok := processOf(id); !ok || got != want {
			t.Errorf("processOf(%d) without pidfds = %+v, %v; want %+v", id, got, ok, want)
		}
	}
	if _, ok := processOf(1 << 30); ok {
		t.Error("a process that does not exist was identified")
	}
}

// TestThreadPidfdCache: a thread that is not its process's leader is
// cached with a pidfd of its own after its first request, so that its
// next requests read nothing in /proc; once it exits, its entry counts
// no more.
func TestThreadPidfdCache(t *testing.T) {
	want, ok := processOf(os.Getpid())
	if !ok {
		t.Fatal("this process is not identified")
	}
	tid, stop := otherThread(t)
	if got, ok := processOf(tid); !ok || got != want {
		stop()
		t.Fatalf("processOf(thread %d) = %+v, %v; want %+v", tid, got, ok, want)
	}
	if !threadPidfdsWork.Load() {
		stop()
		t.Skip("no thread pidfds here (Linux < 6.9): threads are mapped through /proc")
	}
	if got, ok := threads.cached(tid); !ok || got != want {
		t.Errorf("thread %d not cached after its first lookup: %+v, %v", tid, got, ok)
	}
	stop() // the goroutine returns with its thread locked: the thread exits
	for range 1000 {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); os.IsNotExist(err) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p, ok := threads.cached(tid); ok {
		t.Errorf("exited thread %d still cached as %+v", tid, p)
	}
}
