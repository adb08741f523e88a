package fusefs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"scanlockfs/internal/procfs"
	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
)

// childWithFD starts a shell, child of this process, that holds a
// descriptor on dir and waits; it returns the shell's owner.
func childWithFD(t *testing.T, dir string) lockmgr.Owner {
	t.Helper()
	cmd := exec.Command("sh", "-c", `exec 3<"$1"; echo ready; read x`, "sh", dir)
	testutil.StartChild(t, cmd, "ready")
	return callerOwner(callerCtx(cmd.Process.Pid), "scan/b")
}

// The inherited-descriptor rule matches the ancestor by pid and start
// time: a holder with this process's pid but another start time (an
// exited process whose pid this one got) is not this process.
func TestInheritedOwnerMatchesPidAndStartTime(t *testing.T) {
	fsys, _ := testFS(t)
	fsys.mountpoint = t.TempDir()
	scan := filepath.Join(fsys.mountpoint, "scan")
	if err := os.Mkdir(scan, 0o755); err != nil {
		t.Fatal(err)
	}
	self := callerOwner(callerCtx(os.Getpid()), "scan/a")
	st, err := procfs.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	child := childWithFD(t, scan)
	var held *lockmgr.Lease
	hold := func(o lockmgr.Owner) {
		if held != nil {
			held.Release()
		}
		var err error
		if held, err = fsys.mgr.Acquire(context.Background(), "scan", lockmgr.Shared, o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { held.Release() })

	// The very process (this one, the child's parent) holds the scan.
	hold(self)
	if o, ok := fsys.inheritedOwner(child, "scan"); !ok || o.Key != self.Key || o.User != self.User {
		t.Errorf("child of the holder: %+v, %v; want to act as %+v", o, ok, self)
	}
	// Only with a descriptor into that scan.
	if o, ok := fsys.inheritedOwner(child, "other"); ok {
		t.Errorf("child without a descriptor into the scan acts as %+v", o)
	}

	// An earlier process with this pid holds it: same pid, other start.
	for _, start := range []uint64{st.StartTime - 1, st.StartTime + 1} {
		impostor := lockmgr.Owner{User: "root", Key: lockmgr.ProcessKey(os.Getpid(), start), PID: os.Getpid()}
		hold(impostor)
		if o, ok := fsys.inheritedOwner(child, "scan"); ok {
			t.Errorf("child acts as %+v, a holder with its parent's pid and start time %d (parent's %d)", o, start, st.StartTime)
		}
	}

	// A caller whose key is not its process's now (its pid was reused
	// after the request was made) inherits nothing.
	hold(self)
	stale := child
	stale.Key = lockmgr.ProcessKey(child.PID, 1)
	if o, ok := fsys.inheritedOwner(stale, "scan"); ok {
		t.Errorf("a caller whose pid names another process acts as %+v", o)
	}
}
