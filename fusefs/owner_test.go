package fusefs

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
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

func TestTgidOfLeaderAndThread(t *testing.T) {
	pid := os.Getpid()
	if got := tgidOf(pid); got != pid {
		t.Errorf("tgidOf(leader %d) = %d", pid, got)
	}
	tid, stop := otherThread(t)
	defer stop()
	if got := tgidOf(tid); got != pid {
		t.Errorf("tgidOf(thread %d) = %d, want process %d", tid, got, pid)
	}
	if !pidfdOpenWorks.Load() {
		t.Error("looking up a thread that is not a leader turned pidfd_open off for good")
	}
	if got, ok := procTgid(tid); !ok || got != pid {
		t.Errorf("procTgid(%d) = %d, %v; want %d", tid, got, ok, pid)
	}
}

func TestParseTgid(t *testing.T) {
	status := "Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4250\n"
	if got, ok := parseTgid([]byte(status)); !ok || got != 4242 {
		t.Errorf("parseTgid = %d, %v", got, ok)
	}
	for _, bad := range []string{"", "Name:\tx\n", "Name:\tx\nTgid:\tabc\n", "Name:\tx\nTgid:\t0\n"} {
		if got, ok := parseTgid([]byte(bad)); ok {
			t.Errorf("parseTgid(%q) = %d, want failure", bad, got)
		}
	}
}

func TestCallerOwnerIsTheProcess(t *testing.T) {
	pid := os.Getpid()
	tid, stop := otherThread(t)
	defer stop()
	ctx := &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Uid: uint32(os.Getuid())}, Pid: uint32(tid)}}
	o := callerOwner(ctx, "scan/f")
	if o.PID != pid || o.Key != "pid:"+strconv.Itoa(pid) || o.Note != "scan/f" || o.User == "" {
		t.Errorf("callerOwner = %+v, want the process %d", o, pid)
	}
	// Requests without a process get an owner each: never reentrant.
	a := callerOwner(&fuse.Context{}, "")
	b := callerOwner(context.Background(), "")
	if a.Key == b.Key {
		t.Errorf("two kernel requests share owner %q", a.Key)
	}
}

// The mapping is on the path of every open. Run with
// go test -bench TGID ./fusefs
func BenchmarkTGIDLeader(b *testing.B) {
	pid := os.Getpid()
	for b.Loop() {
		tgidOf(pid)
	}
}

func BenchmarkTGIDThread(b *testing.B) {
	tid, stop := otherThread(b)
	defer stop()
	for b.Loop() {
		tgidOf(tid)
	}
}

func BenchmarkTGIDProcStatus(b *testing.B) {
	pid := os.Getpid()
	for b.Loop() {
		procTgid(pid)
	}
}

func TestParsePPid(t *testing.T) {
	cases := map[string]int{
		"25080 (cat) R 25076 25076 5948 0 -1": 25076,
		"7 (a (weird) name) S 1 7 7 0 -1":     1,
		"9 (sp ace) S 4242 9 9":               4242,
	}
	for stat, want := range cases {
		if got, ok := parsePPid(stat); !ok || got != want {
			t.Errorf("parsePPid(%q) = %d, %v; want %d", stat, got, ok, want)
		}
	}
	for _, bad := range []string{"", "1 (x", "1 (x) R", "1 (x) R zz"} {
		if _, ok := parsePPid(bad); ok {
			t.Errorf("parsePPid(%q) succeeded", bad)
		}
	}
	if ppid, ok := parentOf(os.Getpid()); !ok || ppid != os.Getppid() {
		t.Errorf("parentOf(self) = %d, %v; want %d", ppid, ok, os.Getppid())
	}
}

func TestHasFDUnder(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(dir+"/scan", 0o755))
	f, err := os.Create(dir + "/scan/file")
	must(err)
	defer f.Close()
	if !hasFDUnder(os.Getpid(), dir+"/scan") {
		t.Error("open file under dir not found")
	}
	if hasFDUnder(os.Getpid(), dir+"/sc") {
		t.Error("prefix of a name matched")
	}
	must(os.Remove(dir + "/scan/file"))
	if !hasFDUnder(os.Getpid(), dir+"/scan") {
		t.Error("unlinked open file not found")
	}
}

// TestLeaderCacheForgetsExitedProcess: a cached leader counts only while
// its process exists; once it is reaped (and its id free for reuse), the
// entry is dropped and its pidfd closed.
func TestLeaderCacheForgetsExitedProcess(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Process.Kill()
	if got := tgidOf(pid); got != pid {
		t.Fatalf("tgidOf(leader %d) = %d", pid, got)
	}
	if !leaders.holds(pid) {
		t.Fatalf("leader %d is not cached after a lookup", pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if leaders.holds(pid) {
		t.Fatalf("reaped process %d still counts as a cached leader", pid)
	}
	leaders.mu.RLock()
	_, still := leaders.m[pid]
	leaders.mu.RUnlock()
	if still {
		t.Errorf("the entry of reaped process %d was not dropped", pid)
	}
}
