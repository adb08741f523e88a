package fusefs

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"scanlockfs/lockmgr"
)

func flockReq(typ uint32) *fuse.FileLock { return &fuse.FileLock{Typ: typ} }

// lockFileT is the lock file of scan in a test file system.
func lockFileT(t *testing.T, scan string) (*fileSystem, *lockFile, *lockHandle) {
	t.Helper()
	fsys, _ := testFS(t)
	fsys.status = newStatusView(fsys.mgr.Root(), "")
	f := &lockFile{fsys: fsys, scan: scan}
	fh, _, errno := f.Open(callerCtx(os.Getpid()), syscall.O_RDONLY)
	if errno != 0 {
		t.Fatal(errno)
	}
	h, ok := fh.(*lockHandle)
	if !ok {
		t.Fatalf("handle %T", fh)
	}
	return fsys, f, h
}

// A flock on a lock file holds the scan until LOCK_UN or the last close;
// a conversion gives the old mode back first, as flock(2) does; a
// non-blocking request under another owner's hold gets EWOULDBLOCK and
// leaves nothing held.
func TestLockFileFlockHoldsScanUntilUnlockOrRelease(t *testing.T) {
	fsys, f, h := lockFileT(t, "scan_a")
	ctx := callerCtx(os.Getpid())
	mode := func() string {
		t.Helper()
		st, err := fsys.mgr.Status("scan_a")
		if err != nil {
			t.Fatal(err)
		}
		return st.State
	}
	if errno := f.Setlkw(ctx, h, 0, flockReq(syscall.F_RDLCK), fuse.FUSE_LK_FLOCK); errno != 0 || mode() != "shared" {
		t.Fatalf("LOCK_SH: %v, scan %s", errno, mode())
	}
	if errno := f.Setlk(ctx, h, 0, flockReq(syscall.F_WRLCK), fuse.FUSE_LK_FLOCK); errno != 0 || mode() != "exclusive" {
		t.Fatalf("LOCK_EX|LOCK_NB over our own LOCK_SH: %v, scan %s", errno, mode())
	}
	if n := fsys.mgr.Stats().Holders; n != 1 {
		t.Fatalf("%d holders after the conversion, want 1", n)
	}
	if errno := f.Setlk(ctx, h, 0, flockReq(syscall.F_UNLCK), fuse.FUSE_LK_FLOCK); errno != 0 || mode() != "free" {
		t.Fatalf("LOCK_UN: %v, scan %s", errno, mode())
	}

	other := lockmgr.Owner{User: "u", Key: "pid:1", PID: 1}
	held, err := fsys.mgr.Acquire(context.Background(), "scan_a", lockmgr.Exclusive, other)
	if err != nil {
		t.Fatal(err)
	}
	if errno := f.Setlk(ctx, h, 0, flockReq(syscall.F_RDLCK), fuse.FUSE_LK_FLOCK); errno != syscall.EWOULDBLOCK {
		t.Fatalf("LOCK_SH|LOCK_NB under another owner: %v, want EWOULDBLOCK", errno)
	}
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
	if errno := f.Setlkw(ctx, h, 0, flockReq(syscall.F_WRLCK), fuse.FUSE_LK_FLOCK); errno != 0 {
		t.Fatal(errno)
	}
	if errno := h.Release(ctx); errno != 0 || mode() != "free" {
		t.Fatalf("release of the handle: %v, scan %s", errno, mode())
	}
	if hs := fsys.mgr.Holders("scan_a"); len(hs) != 0 {
		t.Fatalf("holders left: %v", hs)
	}
}

// fcntl locks are not the lock files' business: refused with ENOLCK
// should the kernel ever forward one.
func TestLockFileRefusesFcntlLocks(t *testing.T) {
	_, f, h := lockFileT(t, "scan_a")
	if errno := f.Setlk(callerCtx(os.Getpid()), h, 0, flockReq(syscall.F_WRLCK), 0); errno != syscall.ENOLCK {
		t.Fatalf("fcntl lock on a lock file: %v, want ENOLCK", errno)
	}
}

// A flock granted after the last close of its open file is given back.
func TestLockFileLeaseAfterReleaseIsGivenBack(t *testing.T) {
	fsys, _, h := lockFileT(t, "scan_a")
	if errno := h.Release(context.Background()); errno != 0 {
		t.Fatal(errno)
	}
	if errno := h.lock(callerCtx(os.Getpid()), lockmgr.Exclusive, false); errno != 0 {
		t.Fatal(errno)
	}
	if n := fsys.mgr.Stats().Holders; n != 0 {
		t.Fatalf("%d holders after a flock on a released handle", n)
	}
}

func TestPlantdbUnlinks(t *testing.T) {
	for name, want := range map[string]bool{
		"scan_a.lock": true, "scan_a.info": true, "lock_manager.log": true,
		"status.json": false, "metrics": false, ".x.lock": false, "scan_a": false, "x.log": false,
	} {
		if got := plantdbUnlinks(name); got != want {
			t.Errorf("plantdbUnlinks(%q) = %v, want %v", name, got, want)
		}
	}
}

// What plantdb writes to lock_manager.log reaches the daemon's log one
// line per entry, whatever the writes' boundaries; a line too long is
// logged in pieces, and an unfinished last line at close.
func TestSinkLogsLines(t *testing.T) {
	l, hook := test.NewNullLogger()
	s := &sink{log: l.WithField("component", "plantdb")}
	long := strings.Repeat("x", maxLogLine+10)
	for _, w := range []string{"INFO - one\nINFO - t", "wo\n", long + "\n", "last"} {
		if n, errno := s.Write(context.Background(), []byte(w), 0); errno != 0 || int(n) != len(w) {
			t.Fatalf("write %q: %d, %v", w, n, errno)
		}
	}
	if errno := s.Release(context.Background()); errno != 0 {
		t.Fatal(errno)
	}
	var got []string
	for _, e := range hook.AllEntries() {
		if e.Level != logrus.InfoLevel || e.Data["component"] != "plantdb" {
			t.Errorf("entry %v %v", e.Level, e.Data)
		}
		got = append(got, e.Message)
	}
	want := []string{"INFO - one", "INFO - two", long[:maxLogLine], long[maxLogLine:], "last"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("logged %q, want %q", got, want)
	}
	// A dropping sink (plantdb's .info record) accepts and keeps nothing.
	d := &sink{}
	if n, errno := d.Write(context.Background(), []byte("{}"), 0); errno != 0 || n != 2 {
		t.Fatalf("dropping sink: %d, %v", n, errno)
	}
	if errno := d.Release(context.Background()); errno != 0 {
		t.Fatalf("release of a dropping sink: %v", errno)
	}
}
