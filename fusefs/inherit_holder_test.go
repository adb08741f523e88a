package fusefs

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"scanlockfs/lockmgr"
)

// underFlock runs `flock MODE LOCKFILE sh`, whose shell writes its pid
// to a file and sleeps; it returns the owner of the shell (a child of
// flock(1), the holder) and flock's pid.
func underFlock(t *testing.T, fsys *fileSystem, scan, flag string) (child lockmgr.Owner, holder int) {
	t.Helper()
	pidFile := t.TempDir() + "/pid"
	cmd := exec.Command("flock", flag, fsys.mgr.LockDir()+"/"+scan+".lock", "sh", "-c", `echo $$ > "$0"; exec sleep 600`, pidFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1): %v", err)
	}
	pid := 0
	t.Cleanup(func() {
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL) // flock(1) exits with its command
		}
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(2 * time.Millisecond) {
		if b, err := os.ReadFile(pidFile); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			pid, _ = strconv.Atoi(string(b[:len(b)-1]))
		} else if time.Now().After(deadline) {
			t.Fatalf("the shell under flock(1) never wrote its pid")
		}
	}
	return callerOwner(callerCtx(pid), scan+"/a"), cmd.Process.Pid
}

// A process under a holder of the scan on SOURCE acts as that holder: for
// anything under an exclusive holder, for reading only under a shared
// one. A process outside the holder's family does not.
func TestUnderHolderOnSource(t *testing.T) {
	fsys, _ := testFS(t)
	child, holder := underFlock(t, fsys, "scan_x", "-x")
	for _, mode := range []lockmgr.Mode{lockmgr.Shared, lockmgr.Exclusive} {
		o, ok := fsys.underHolder(child, "scan_x", mode)
		if !ok || o.PID != holder {
			t.Errorf("%s request of flock's child: %+v, %v; want to act as flock (pid %d)", mode, o, ok, holder)
		}
	}
	if o, ok := fsys.underHolder(callerOwner(callerCtx(os.Getpid()), "scan_x/a"), "scan_x", lockmgr.Shared); ok {
		t.Errorf("a process outside the holder's family acts as %+v", o)
	}
	// Through lock, the child's write is granted at once, as a loan.
	fsys.timeout = 5 * time.Second
	req := lockReq{op: "open", path: "scan_x/a", mode: lockmgr.Exclusive}
	leases, errno := fsys.lock(callerCtx(child.PID), req, "scan_x")
	if errno != 0 || leases[0].Owner().PID != holder {
		t.Fatalf("write of flock's child through lock: %v, %v; want it granted as flock (pid %d)", leases, errno, holder)
	}
	fsys.unlock(req, leases)

	child, holder = underFlock(t, fsys, "scan_s", "-s")
	if o, ok := fsys.underHolder(child, "scan_s", lockmgr.Shared); !ok || o.PID != holder {
		t.Errorf("read under a shared holder: %+v, %v; want to act as flock (pid %d)", o, ok, holder)
	}
	if o, ok := fsys.underHolder(child, "scan_s", lockmgr.Exclusive); ok {
		t.Errorf("write under a shared holder acts as %+v; want it to wait", o)
	}
}
