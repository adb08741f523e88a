package fusefs

import (
	"context"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"scanlockfs/lockmgr"
)

// Lock files: MOUNTPOINT/.locks/<scan>.lock.
//
// They are plantdb's lock files as a program of the mount sees them, and
// flock(1)'s: opening one (read-only as flock(1) does, or
// O_CREAT|O_WRONLY|O_TRUNC as plantdb does) takes no lock, and flock(2)
// on the open file takes the scan's real lock in the daemon, through
// fsys.lock like an open of a file of the scan: the same owner (the
// calling process), queue, timeout (EBUSY), interrupt (EINTR) and
// non-blocking (LOCK_NB: EWOULDBLOCK) rules, shown in the status view
// as a hold or wait of the mount with path ".locks/<scan>.lock". The
// kernel forwards flock(2) because the mount asks for it
// (MountOptions.EnableLocks; fcntl locks are not forwarded, see
// mount.go). The lease belongs to the open file: LOCK_UN, another
// flock on it (a conversion drops the old lock first, as flock(2) does
// on Linux) or its last close (RELEASE) gives it back, so a process
// killed while it holds one frees the scan once the kernel closes its
// files.
//
// Nothing here touches SOURCE's lock directory: a lock file of the mount
// is no file anywhere. Every valid scan id has one (a scan about to be
// created included), so opening it never needs write permission on
// .locks; truncating or unlinking it succeeds and changes nothing.
// Permission is checked at flock(2), per mode (mayLock): shared for a
// user who may read the scan directory, exclusive for one who may
// change it (or, for a scan that does not exist yet, create it).

const (
	lockSuffix   = ".lock"
	lockFileMode = 0o666 // anyone may open it; flock checks permission
)

// lockFile is MOUNTPOINT/.locks/<scan>.lock.
type lockFile struct {
	fs.Inode
	fsys *fileSystem
	scan string
}

func (f *lockFile) path() string { return statusDirName + "/" + f.scan + lockSuffix }

var _ = (fs.NodeOpener)((*lockFile)(nil))

// Open takes no lock: it checks that the caller may take at least the
// shared lock, so that a program that may not lock the scan learns it at
// open, as it would on SOURCE.
func (f *lockFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if errno := f.fsys.mayLock(ctx, f.scan, lockmgr.Shared); errno != 0 {
		return nil, 0, errno
	}
	return &lockHandle{fsys: f.fsys, scan: f.scan, path: f.path()}, fuse.FOPEN_DIRECT_IO, 0
}

var _ = (fs.NodeGetattrer)((*lockFile)(nil))

func (f *lockFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fsys.status.fileAttr(&out.Attr, f.StableAttr().Ino)
	return 0
}

var _ = (fs.NodeSetattrer)((*lockFile)(nil))

// Setattr accepts what opening with O_TRUNC or touch(1) asks (size 0,
// times) and changes nothing; other changes fail with EPERM.
func (f *lockFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.fsys.status.setWritableAttr(in, out, f.StableAttr().Ino)
}

// setWritableAttr is Setattr of the writable files of .locks.
func (v *statusView) setWritableAttr(in *fuse.SetAttrIn, out *fuse.AttrOut, ino uint64) syscall.Errno {
	const allowed = fuse.FATTR_SIZE | fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW | fuse.FATTR_CTIME | fuse.FATTR_FH | fuse.FATTR_LOCKOWNER | fuse.FATTR_KILL_SUIDGID
	if in.Valid&^allowed != 0 {
		return syscall.EPERM
	}
	if sz, ok := in.GetSize(); ok && sz != 0 {
		return syscall.EPERM
	}
	v.fileAttr(&out.Attr, ino)
	return 0
}

var (
	_ = (fs.NodeSetlker)((*lockFile)(nil))
	_ = (fs.NodeSetlkwer)((*lockFile)(nil))
)

// Setlk is flock(2) with LOCK_NB (and LOCK_UN).
func (f *lockFile) Setlk(ctx context.Context, fh fs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.setlk(ctx, fh, lk, flags, true)
}

// Setlkw is flock(2) that waits.
func (f *lockFile) Setlkw(ctx context.Context, fh fs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.setlk(ctx, fh, lk, flags, false)
}

func (f *lockFile) setlk(ctx context.Context, fh fs.FileHandle, lk *fuse.FileLock, flags uint32, nonblock bool) syscall.Errno {
	h, ok := fh.(*lockHandle)
	if !ok {
		return syscall.EBADF
	}
	if flags&fuse.FUSE_LK_FLOCK == 0 {
		// fcntl locks are not forwarded (mount.go); refuse any that is.
		return syscall.ENOLCK
	}
	var mode lockmgr.Mode
	switch lk.Typ {
	case syscall.F_UNLCK:
		h.unlock()
		return 0
	case syscall.F_RDLCK:
		mode = lockmgr.Shared
	case syscall.F_WRLCK:
		mode = lockmgr.Exclusive
	default:
		return syscall.EINVAL
	}
	if mode == lockmgr.Exclusive && f.fsys.readOnly {
		return syscall.EROFS
	}
	if errno := f.fsys.mayLock(ctx, f.scan, mode); errno != 0 {
		return errno
	}
	return h.lock(ctx, mode, nonblock)
}

// lockHandle is an open lock file: the lease its flock(2) holds, if any.
type lockHandle struct {
	fsys *fileSystem
	scan string
	path string

	mu     sync.Mutex // guards the fields below; never held while waiting
	lease  *lockmgr.Lease
	closed bool
}

func (h *lockHandle) req(mode lockmgr.Mode, nonblock bool) lockReq {
	return lockReq{op: "flock", path: h.path, mode: mode, nonblock: nonblock}
}

// lock takes the scan in mode for the calling process. Like flock(2) on
// Linux, a conversion is not atomic: the old lease is given back before
// the new one is asked for, so a conversion that fails leaves none.
func (h *lockHandle) lock(ctx context.Context, mode lockmgr.Mode, nonblock bool) syscall.Errno {
	h.mu.Lock()
	old := h.lease
	if old != nil && old.Mode() == mode {
		h.mu.Unlock()
		return 0
	}
	h.lease = nil
	h.mu.Unlock()
	req := h.req(mode, nonblock)
	h.fsys.release(req, old)
	leases, errno := h.fsys.lock(ctx, req, h.scan)
	if errno != 0 {
		return errno
	}
	h.mu.Lock()
	// Another flock on the same open file that finished meanwhile is
	// replaced (the last one wins); a lease granted after the last close
	// is given back at once.
	prev := h.lease
	keep := !h.closed
	if keep {
		h.lease = leases[0]
	}
	h.mu.Unlock()
	h.fsys.release(req, prev)
	if !keep {
		h.fsys.unlock(req, leases)
	}
	return 0
}

// unlock is LOCK_UN: gives the lease back, if any.
func (h *lockHandle) unlock() {
	h.mu.Lock()
	l := h.lease
	h.lease = nil
	h.mu.Unlock()
	if l != nil {
		h.fsys.release(h.req(l.Mode(), false), l)
	}
}

var _ = (fs.FileReleaser)((*lockHandle)(nil))

// Release is the last close of the open file: its flock goes with it.
func (h *lockHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.unlock()
	return 0
}

var (
	_ = (fs.FileReader)((*lockHandle)(nil))
	_ = (fs.FileWriter)((*lockHandle)(nil))
)

// Read finds the lock file empty.
func (h *lockHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultData(nil), 0
}

// Write accepts and drops what is written (a pid, say): the lock file
// has no content.
func (h *lockHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return uint32(len(data)), 0
}

// mayLock reports whether the caller of ctx may take scan's lock in mode
// through the mount: search permission on SOURCE, and on the scan
// directory read and search for shared, write and search for exclusive;
// for a scan that does not exist, the same on SOURCE (where it would be
// created). Mode bits, owner and groups decide, as for the status view
// (status_viewer.go). Root may always.
func (fsys *fileSystem) mayLock(ctx context.Context, scan string, mode lockmgr.Mode) syscall.Errno {
	v := viewerOf(ctx)
	if v.all {
		return 0
	}
	want := uint32(5) // read and search
	if mode == lockmgr.Exclusive {
		want = 3 // write and search
	}
	var src, st syscall.Stat_t
	if err := syscall.Stat(fsys.status.source, &src); err != nil {
		return toErrno(fsys.log, err)
	}
	if !v.permits(&src, 1) {
		return syscall.EACCES
	}
	dir := &src
	if syscall.Lstat(filepath.Join(fsys.status.source, scan), &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		dir = &st
	}
	if !v.permits(dir, want) {
		return syscall.EACCES
	}
	return 0
}
