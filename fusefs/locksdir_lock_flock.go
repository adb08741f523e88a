package fusefs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"scanlockfs/internal/procfs"
)

// flock(2) on the files of the scans. The mount asks the kernel to
// forward flock(2) (mount.go) for the lock files of .locks; the kernel
// then forwards it on every regular file of the mount. A handle's flock
// is taken on its backing descriptor, the handle's own open file on
// SOURCE: the semantics of flock(2) there (one lock per open file,
// shared by dup and fork, released at its last close), seen by SOURCE's
// users too. It takes no scan lock.
//
// The loopback file's Setlkw would sleep in flock(2) in a handler,
// holding an OS thread and deaf to interrupts: here a waiting flock
// tries LOCK_NB with backoff until it is granted, or interrupted (EINTR,
// which the kernel restarts for a signal handler with SA_RESTART).

// maxFlockBackoff bounds the pause between two tries of a waiting flock.
const maxFlockBackoff = 50 * time.Millisecond

var _ = (fs.FileSetlkwer)((*handle)(nil))

// Setlkw is flock(2) that waits, on the backing descriptor.
func (h *handle) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	delay := time.Millisecond
	for {
		errno := h.LoopbackFile.Setlk(ctx, owner, lk, flags)
		if errno != syscall.EAGAIN {
			return errno
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return syscall.EINTR
		case <-t.C:
		}
		delay = min(2*delay, maxFlockBackoff)
	}
}

// hasScanFD reports whether process pid has a descriptor into scan in
// this mount, for the inherited-descriptor rule (inherit.go): on the scan
// directory or below it, or on the scan's lock file in .locks, whose
// flock a parent such as flock(1) holds for it.
func (fsys *fileSystem) hasScanFD(pid int, scan string) bool {
	return procfs.HasFDUnder(pid, fsys.mountpoint+"/"+scan) ||
		procfs.HasFDUnder(pid, fsys.mountpoint+"/"+statusDirName+"/"+scan+lockSuffix)
}
