package fusefs

import (
	"context"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"scanlockfs/lockmgr"
)

// handle is an open file of the mount. It embeds the loopback file, so
// that every FileXxx interface go-fuse knows is promoted, notably
// FilePassthroughFder: with passthrough, reads and writes go from the
// kernel straight to the backing file, and only open and release reach
// the daemon. The handle owns the scan lease taken at open; it is
// released on RELEASE (the last close of the last descriptor sharing the
// open file, including those inherited by fork or kept by mmap), never on
// FLUSH, which runs on every close(2).
type handle struct {
	*fs.LoopbackFile
	fsys  *fileSystem
	req   lockReq
	scan  string         // "" when the file is in no scan
	lease *lockmgr.Lease // nil when the file is in no scan
	fd    int            // the backing descriptor, owned by LoopbackFile
	node  *node          // the node whose open file this is (node_files.go); nil in unit tests

	released atomic.Bool
}

// Release closes the backing file first, so that everything written
// through it is in the backing file system, and only then gives the scan
// lease back. go-fuse waits for the handle's in-flight operations before
// calling it.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	if !h.released.CompareAndSwap(false, true) {
		h.fsys.log.WithField("path", h.req.path).Error("BUG: file handle released twice; ignoring the second release")
		return syscall.EBADF
	}
	h.detach()
	errno := h.LoopbackFile.Release(ctx)
	if errno != 0 {
		h.fsys.log.WithField("path", h.req.path).WithField("errno", errno).Warn("closing backing file failed")
	}
	h.fsys.release(h.req, h.lease)
	return errno
}

// Read is only called without passthrough; it counts, so that the use of
// passthrough can be checked.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.fsys.stats.reads.Add(1)
	if h.fenced() {
		return nil, syscall.EIO
	}
	return h.LoopbackFile.Read(ctx, dest, off)
}

// Write is only called without passthrough (see Read).
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.fsys.stats.writes.Add(1)
	if h.fenced() {
		return 0, syscall.EIO
	}
	return h.LoopbackFile.Write(ctx, data, off)
}

// Writev is only called without passthrough (see Read).
func (h *handle) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	h.fsys.stats.writes.Add(1)
	if h.fenced() {
		return 0, syscall.EIO
	}
	return h.LoopbackFile.Writev(ctx, data, off)
}

// fenced reports that the handle's scan lease was lost (--etcd: the
// session ended, so another host may hold the scan): its reads and
// writes fail with EIO. Without etcd it is one type assertion.
func (h *handle) fenced() bool {
	if h.lease == nil || !h.lease.Lost() {
		return false
	}
	h.fsys.log.WithField("path", h.req.path).Warn("the scan lock of this open file was lost (etcd session ended): EIO")
	return true
}

// unwrapFile returns the loopback file inside a handle of ours, for
// go-fuse code that type-asserts *fs.LoopbackFile (CopyFileRange).
func unwrapFile(f fs.FileHandle) fs.FileHandle {
	if h, ok := f.(*handle); ok {
		return h.LoopbackFile
	}
	return f
}

// counters are the daemon's own statistics, see Stats.
type counters struct {
	opens, reads, writes atomic.Uint64
}

// Stats counts what the daemon served since the mount.
type Stats struct {
	// Opens counts successful opens and creates of files.
	Opens uint64
	// Reads and Writes count read and write requests that reached the
	// daemon. With passthrough they stay at zero: the kernel reads and
	// writes the backing files itself.
	Reads, Writes uint64
}

var _ = (fs.FileIoctler)((*handle)(nil))

// Ioctl refuses every ioctl. The loopback file would run it on the
// backing descriptor as root, without a lock (FS_IOC_SETFSLABEL,
// EXT4_IOC_SHUTDOWN... from any user who may read one file). node.Ioctl
// answers first for every handle of the mount; this one keeps the
// embedded loopback file's Ioctl from ever being promoted.
func (h *handle) Ioctl(ctx context.Context, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}
