package fusefs

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"scanlockfs/lockmgr"
)

func testFS(t *testing.T) (*fileSystem, *bytesBuffer) {
	t.Helper()
	root := t.TempDir()
	m, err := lockmgr.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	l := logrus.New()
	var buf bytesBuffer
	l.SetOutput(&buf)
	return &fileSystem{mgr: m, log: l}, &buf
}

// callerCtx is a FUSE request context from process pid.
func callerCtx(pid int) context.Context {
	return &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Uid: uint32(os.Getuid())}, Pid: uint32(pid)}}
}

func TestLockTakesScansInSortedOrderOnce(t *testing.T) {
	fsys, _ := testFS(t)
	req := lockReq{op: "rename", path: "b/x -> a/y", mode: lockmgr.Exclusive}
	leases, errno := fsys.lock(callerCtx(os.Getpid()), req, "scan_b", "", "scan_a", "scan_b")
	if errno != 0 {
		t.Fatal(errno)
	}
	if len(leases) != 2 || leases[0].ScanID() != "scan_a" || leases[1].ScanID() != "scan_b" {
		t.Fatalf("leases: %v", leases)
	}
	fsys.unlock(req, leases)
	if st := fsys.mgr.Stats(); st.Holders != 0 {
		t.Fatalf("%d holders left after unlock", st.Holders)
	}
}

func TestLockFailureKeepsNothing(t *testing.T) {
	fsys, _ := testFS(t)
	// Another process (owner) holds scan_b.
	other := lockmgr.Owner{User: "u", Key: "pid:1", PID: 1}
	held, err := fsys.mgr.Acquire(context.Background(), "scan_b", lockmgr.Exclusive, other)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	req := lockReq{op: "rename", mode: lockmgr.Exclusive, nonblock: true}
	leases, errno := fsys.lock(callerCtx(os.Getpid()), req, "scan_a", "scan_b")
	if errno != syscall.EAGAIN || leases != nil {
		t.Fatalf("lock = %v, %v; want EAGAIN", leases, errno)
	}
	if st := fsys.mgr.Stats(); st.Holders != 1 {
		t.Fatalf("%d holders, want only the other owner's", st.Holders)
	}
}

func TestLockIsReentrantForOneProcess(t *testing.T) {
	fsys, _ := testFS(t)
	ctx := callerCtx(os.Getpid())
	w := lockReq{op: "open", mode: lockmgr.Exclusive, nonblock: true}
	l1, errno := fsys.lock(ctx, w, "scan_a")
	if errno != 0 {
		t.Fatal(errno)
	}
	r := lockReq{op: "open", mode: lockmgr.Shared, nonblock: true}
	l2, errno := fsys.lock(ctx, r, "scan_a")
	if errno != 0 {
		t.Fatalf("same process, second open: %v", errno)
	}
	fsys.unlock(r, l2)
	fsys.unlock(w, l1)
}

func TestHandleReleaseClosesThenReleasesOnce(t *testing.T) {
	fsys, log := testFS(t)
	fd, err := syscall.Open(filepath.Join(t.TempDir(), "f"), syscall.O_CREAT|syscall.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	req := lockReq{op: "open", path: "scan_a/f", mode: lockmgr.Exclusive}
	leases, errno := fsys.lock(callerCtx(os.Getpid()), req, "scan_a")
	if errno != 0 {
		t.Fatal(errno)
	}
	h := fsys.newHandle(fd, req, "scan_a", leases)
	if _, ok := h.PassthroughFd(); !ok {
		t.Fatal("handle has no descriptor")
	}
	if errno := h.Release(context.Background()); errno != 0 {
		t.Fatalf("release: %v", errno)
	}
	if _, ok := h.PassthroughFd(); ok {
		t.Error("backing file still open after release")
	}
	if st := fsys.mgr.Stats(); st.Holders != 0 {
		t.Errorf("%d holders after release", st.Holders)
	}
	if errno := h.Release(context.Background()); errno != syscall.EBADF {
		t.Errorf("second release: %v, want EBADF", errno)
	}
	if !log.contains("released twice") {
		t.Errorf("double release not logged: %s", log.String())
	}
}

// Regression: RELEASE arrives after close(2) returned, so two processes
// that each closed a file they read and then open one for writing look,
// for a moment, like two upgraders waiting for each other. The one that
// would get EDEADLK must wait for the late release instead.
func TestUpgradeDeadlockWaitsForLateRelease(t *testing.T) {
	fsys, _ := testFS(t)
	ctx := callerCtx(os.Getpid())
	bg := context.Background()
	other, otherShared, r, mine := bothShared(t, fsys, ctx)
	// The other process asks for exclusive while both hold shared: it waits.
	otherExcl := make(chan *lockmgr.Lease, 1)
	go func() {
		l, err := fsys.mgr.Acquire(bg, "scan_a", lockmgr.Exclusive, other)
		if err != nil {
			t.Error(err)
		}
		otherExcl <- l
	}()
	waitWaiter(fsys)
	// Our late RELEASE of the shared handle arrives while our write open
	// is being refused as a deadlock.
	go func() {
		time.Sleep(10 * time.Millisecond)
		fsys.unlock(r, mine)
	}()
	w := lockReq{op: "open", mode: lockmgr.Exclusive}
	pending := goLock(fsys, ctx, w, "scan_a")
	l := <-otherExcl // the other upgrade goes through once our release is in
	l.Release()
	otherShared.Release()
	pending.granted(t, "write open after a late release")
}

// A real upgrade deadlock still gets EDEADLK, after the grace period.
func TestUpgradeDeadlockIsRefused(t *testing.T) {
	fsys, _ := testFS(t)
	ctx := callerCtx(os.Getpid())
	bg := context.Background()
	other, otherShared, r, mine := bothShared(t, fsys, ctx)
	otherErr := make(chan error, 1)
	waitCtx, cancel := context.WithCancel(bg)
	go func() {
		_, err := fsys.mgr.Acquire(waitCtx, "scan_a", lockmgr.Exclusive, other)
		otherErr <- err
	}()
	waitWaiter(fsys)
	start := time.Now()
	_, errno := fsys.lock(ctx, lockReq{op: "open", mode: lockmgr.Exclusive}, "scan_a")
	if errno != syscall.EDEADLK {
		t.Fatalf("second upgrade: %v, want EDEADLK", errno)
	}
	if waited := time.Since(start); waited < deadlockGrace {
		t.Fatalf("EDEADLK after %v, want the grace of %v first", waited, deadlockGrace)
	}
	if n := fsys.mgr.Stats().Deadlocks; n != 1 {
		t.Errorf("one EDEADLK, retried during the grace, counted as %d deadlocks in the metrics, want 1", n)
	}
	cancel()
	<-otherErr
	fsys.unlock(r, mine)
	otherShared.Release()
}

// Regression: Go programs get spurious FUSE interrupts (SIGURG
// preemption), and raw syscalls do not retry EINTR. A wait interrupted
// just before the scan is released must still succeed.
func TestInterruptedWaitGrantedWithinGraceSucceeds(t *testing.T) {
	fsys, _ := testFS(t)
	// A long grace, so that the test does not depend on the machine's speed.
	saved := interruptGrace
	interruptGrace = 10 * time.Second
	t.Cleanup(func() { interruptGrace = saved })
	ctx, cancel, held := interruptible(t, fsys)
	r := lockReq{op: "open", mode: lockmgr.Shared}
	pending := goLock(fsys, ctx, r, "scan_a")
	waitWaiter(fsys)
	close(cancel) // the interrupt
	// Without the grace the wait would give up within microseconds; this
	// pause lets it, so that the test fails if the grace is missing.
	time.Sleep(50 * time.Millisecond)
	held.Release()
	pending.granted(t, "interrupted wait granted within the grace")
}

// A wait interrupted for good (Ctrl-C) still ends with EINTR and leaves
// nothing queued.
func TestInterruptedWaitGivesEINTR(t *testing.T) {
	fsys, _ := testFS(t)
	ctx, cancel, held := interruptible(t, fsys)
	defer held.Release()
	pending := goLock(fsys, ctx, lockReq{op: "open", mode: lockmgr.Shared}, "scan_a")
	waitWaiter(fsys)
	close(cancel)
	if errno := pending.result(); errno != syscall.EINTR {
		t.Fatalf("interrupted wait: %v, want EINTR", errno)
	}
	if st := fsys.mgr.Stats(); st.Waiters != 0 || st.Holders != 1 {
		t.Fatalf("after EINTR: %d waiters, %d holders; want 0 and 1", st.Waiters, st.Holders)
	}
}

// goLock runs fsys.lock in a goroutine.
func goLock(fsys *fileSystem, ctx context.Context, r lockReq, scan string) *pendingLock {
	p := &pendingLock{fsys: fsys, r: r, done: make(chan struct{})}
	go func() {
		p.got, p.errno = fsys.lock(ctx, r, scan)
		close(p.done)
	}()
	return p
}

// pendingLock is a call of fsys.lock running in a goroutine.
type pendingLock struct {
	fsys  *fileSystem
	r     lockReq
	done  chan struct{}
	got   []*lockmgr.Lease
	errno syscall.Errno
}

// result waits for the call and returns its errno.
func (p *pendingLock) result() syscall.Errno {
	<-p.done
	return p.errno
}

// granted fails t unless the call succeeded, and releases what it got;
// what names the call.
func (p *pendingLock) granted(t *testing.T, what string) {
	t.Helper()
	if errno := p.result(); errno != 0 {
		t.Fatalf("%s: %v, want success", what, errno)
	}
	p.fsys.unlock(p.r, p.got)
}

// waitWaiter waits until fsys's lock manager has a waiter.
func waitWaiter(fsys *fileSystem) {
	for fsys.mgr.Stats().Waiters != 1 {
		time.Sleep(time.Millisecond)
	}
}

// bothShared has another process (owner other) and this one (through
// fsys.lock with ctx) hold scan_a shared.
func bothShared(t *testing.T, fsys *fileSystem, ctx context.Context) (other lockmgr.Owner, otherShared *lockmgr.Lease, r lockReq, mine []*lockmgr.Lease) {
	t.Helper()
	other = lockmgr.Owner{User: "u", Key: "pid:1", PID: 1}
	otherShared, err := fsys.mgr.Acquire(context.Background(), "scan_a", lockmgr.Shared, other)
	if err != nil {
		t.Fatal(err)
	}
	r = lockReq{op: "open", mode: lockmgr.Shared}
	mine, errno := fsys.lock(ctx, r, "scan_a")
	if errno != 0 {
		t.Fatal(errno)
	}
	return other, otherShared, r, mine
}

// interruptible is a FUSE request context of this process that the
// returned channel's close interrupts, with scan_a held exclusively by
// another process.
func interruptible(t *testing.T, fsys *fileSystem) (ctx context.Context, interrupt chan struct{}, held *lockmgr.Lease) {
	t.Helper()
	other := lockmgr.Owner{User: "u", Key: "pid:1", PID: 1}
	held, err := fsys.mgr.Acquire(context.Background(), "scan_a", lockmgr.Exclusive, other)
	if err != nil {
		t.Fatal(err)
	}
	interrupt = make(chan struct{})
	ctx = &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Uid: uint32(os.Getuid())}, Pid: uint32(os.Getpid())}, Cancel: interrupt}
	return ctx, interrupt, held
}
