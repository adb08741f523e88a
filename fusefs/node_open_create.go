package fusefs

import (
	"context"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"scanlockfs/lockmgr"
)

// openMode is the lock an open needs: shared for reading, exclusive for
// anything that can change the file (write access, O_TRUNC, O_APPEND).
func openMode(flags uint32) lockmgr.Mode {
	if isWriteOpen(flags) {
		return lockmgr.Exclusive
	}
	return lockmgr.Shared
}

func isWriteOpen(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&(syscall.O_TRUNC|syscall.O_APPEND) != 0
}

// backingFlags are the flags of an open or create as the backing file is
// opened with: O_APPEND is left to the kernel (writes carry their offset),
// FMODE_EXEC is the kernel's own, O_TRUNC is done once the file is checked
// (openFile). O_NONBLOCK is always added, so that a FIFO swapped in for
// the file never blocks the daemon; it is cleared again unless asked for.
func backingFlags(flags uint32) int {
	return int(flags)&^(syscall.O_APPEND|fuse.FMODE_EXEC|syscall.O_TRUNC|syscall.O_CREAT|syscall.O_EXCL) | syscall.O_NONBLOCK
}

// setFlFlags are the flags of an open that F_SETFL sets too, and must
// keep (O_APPEND is left out, O_ASYNC is ignored by open(2)).
const setFlFlags = unix.O_DIRECT | unix.O_NOATIME

// finishOpen clears the O_NONBLOCK that backingFlags added, unless the
// caller asked for it.
func finishOpen(fd int, flags uint32) error {
	if flags&syscall.O_NONBLOCK != 0 {
		return nil
	}
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, int(flags)&setFlFlags)
	return err
}

var _ = (fs.NodeOpener)((*node)(nil))

// Open takes the scan lock, then opens the backing file (resolved and
// checked now, with no symlink followed), truncates it if asked (under
// the lock), and hands the lease to the file handle, which keeps it
// until RELEASE.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.readOnly && isWriteOpen(flags) {
		return nil, 0, syscall.EROFS
	}
	scan, rel := n.scan()
	req := lockReq{op: "open", path: rel, mode: openMode(flags), nonblock: flags&syscall.O_NONBLOCK != 0, beforeWait: n.stillThere}
	h, errno := n.fsys.lockedHandle(ctx, req, scan, func() (int, *node, syscall.Errno) {
		fd, errno := n.openFile(flags)
		return fd, n, errno
	})
	if errno != 0 {
		return nil, 0, errno
	}
	return h, openFlags, 0
}

// stillThere answers an OPEN of a name the kernel took from its entry
// cache as a LOOKUP would have, before the open waits for a lock: ENOENT
// when the name went from SOURCE meanwhile (or SOURCE itself went).
// Without it, an open of a file removed on SOURCE would wait for the
// scan's lock (held, say, by the writer that removed it) before failing.
// It only refuses early: whatever it finds, the open resolves and checks
// the file again after the lock (openSelf). It runs only when the open
// would wait (lockReq.beforeWait): an open granted at once finds a
// removed file gone in openSelf anyway, so the uncontended path does
// not resolve the path twice. One statx by SOURCE's path, which
// follows the path as every resolution does; none when names are not
// cached.
func (n *node) stillThere() syscall.Errno {
	if n.fsys.entryTimeout == 0 || n.isRoot() {
		return 0
	}
	if _, parent := n.Parent(); parent == nil {
		return 0 // no name (unlinked while open, O_TMPFILE): nothing cached
	}
	var st unix.Stat_t
	err := unix.Fstatat(unix.AT_FDCWD, n.fsys.back.path+"/"+n.relPath(), &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT || err == unix.ENOTDIR {
		return err.(syscall.Errno)
	}
	return 0
}

// openFlags are the FUSE flags of every open and create: no FLUSH on
// close(2) (file_flush.go).
const openFlags = fuse.FOPEN_NOFLUSH

// lockedHandle is how Open, Create and Tmpfile lock: it takes req.mode on
// scan, runs open (which resolves the file only now), and hands the
// leases to the handle of the descriptor open returns, a file of the
// node open returns; on failure they are released. The handle is
// returned as an interface only when there is one: a nil *handle in an
// fs.FileHandle is not nil, and go-fuse would use it.
func (fsys *fileSystem) lockedHandle(ctx context.Context, req lockReq, scan string, open func() (int, *node, syscall.Errno)) (fs.FileHandle, syscall.Errno) {
	var h *handle
	errno := fsys.underLock(ctx, req, []string{scan}, func(leases []*lockmgr.Lease) (bool, syscall.Errno) {
		fd, of, errno := open()
		if errno != 0 {
			return false, errno
		}
		h = fsys.newHandle(fd, req, scan, leases)
		h.attach(of)
		return true, 0
	})
	if errno != 0 {
		return nil, errno
	}
	return h, 0
}

// openFile opens n's backing file for an OPEN with flags.
func (n *node) openFile(flags uint32) (int, syscall.Errno) {
	fd, st, errno := n.openSelf(backingFlags(flags))
	if errno != 0 {
		return -1, errno
	}
	n.refresh(&st)
	err := finishOpen(fd, flags)
	if err == nil && flags&syscall.O_TRUNC != 0 {
		if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
			err = unix.Ftruncate(fd, 0)
		} else {
			// open(O_RDONLY|O_TRUNC) truncates too; the descriptor
			// cannot, the checked inode behind it can.
			err = unix.Truncate(procPath(fd), 0)
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, n.errno(err)
	}
	return fd, 0
}

var _ = (fs.NodeCreater)((*node)(nil))

// Create takes the exclusive lock on the scan of the new file; the
// handle keeps it until RELEASE, like an open for writing.
//
// The kernel checked that the caller may create name in n, not that it
// may open a file of that name: if one appeared during the lock wait, the
// create fails with ESTALE, and the kernel looks the name up again and
// checks the open itself. So a file swapped in meanwhile is never opened.
//
// The kernel holds the directory's inode lock during CREATE, so while a
// create waits for its scan, other creates, unlinks and lookups of new
// names in that directory wait too.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if errno := n.refuseName(name); errno != 0 {
		return nil, nil, 0, errno
	}
	req := lockReq{op: "create", path: n.childPath(name), mode: lockmgr.Exclusive, nonblock: flags&syscall.O_NONBLOCK != 0}
	return n.createFile(ctx, req, n.entryScan(name, false), flags, mode, out, func(dfd int) (int, syscall.Errno) {
		fd, err := unix.Openat(dfd, name, backingFlags(flags)|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, createMode(mode))
		if err == unix.EEXIST && flags&syscall.O_EXCL == 0 {
			return -1, syscall.ESTALE
		}
		if err != nil {
			return -1, n.errno(err)
		}
		return fd, 0
	})
}

// createFile is Create and Tmpfile once the request is known: under the
// lock, create (which calls openat with O_CREAT or O_TMPFILE in dfd, the
// checked descriptor of n) makes the file, newFile finishes it, and the
// handle keeps the lease.
func (n *node) createFile(ctx context.Context, req lockReq, scan string, flags, mode uint32, out *fuse.EntryOut, create func(dfd int) (int, syscall.Errno)) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	var child *fs.Inode
	h, errno := n.fsys.lockedHandle(ctx, req, scan, func() (int, *node, syscall.Errno) {
		dfd, done, errno := n.openDir()
		if errno != 0 {
			return -1, nil, errno
		}
		defer done()
		fd, errno := create(dfd)
		if errno != 0 {
			return -1, nil, errno
		}
		child, errno = n.newFile(ctx, fd, dfd, flags, mode, out)
		if errno != 0 {
			unix.Close(fd)
			return -1, nil, errno
		}
		cn, _ := child.Operations().(*node)
		return fd, cn, 0
	})
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return child, h, openFlags, 0
}

// newFile finishes a create or O_TMPFILE open of the file fd, created
// with createMode(mode): flags, owner, set-ID bits, node.
func (n *node) newFile(ctx context.Context, fd, dfd int, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if err := finishOpen(fd, flags); err != nil {
		return nil, n.errno(err)
	}
	st, btime, err := statx(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return nil, n.errno(err)
	}
	if errno := n.giveToCaller(ctx, fd, dfd, &st); errno != 0 {
		return nil, errno
	}
	n.fsys.keepSetID(ctx, fd, n.relPath(), mode, &st)
	out.FromStat(&st)
	return n.newNode(ctx, &st, btime), 0
}

var _ = (fs.NodeTmpfiler)((*node)(nil))

// Tmpfile (open with O_TMPFILE) is a create in directory n.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.readOnly {
		return nil, nil, 0, syscall.EROFS
	}
	scan, rel := n.scan()
	req := lockReq{op: "tmpfile", path: rel + "/(O_TMPFILE)", mode: lockmgr.Exclusive, nonblock: flags&syscall.O_NONBLOCK != 0}
	return n.createFile(ctx, req, scan, flags, mode, out, func(dfd int) (int, syscall.Errno) {
		// O_EXCL here means: never to be linked.
		fd, err := unix.Openat(dfd, ".", backingFlags(flags)|int(flags&syscall.O_EXCL)|unix.O_TMPFILE|unix.O_CLOEXEC, createMode(mode))
		if err != nil {
			return -1, n.errno(err)
		}
		return fd, 0
	})
}

// newHandle makes the handle of an open backing file fd and the leases of
// its open.
func (fsys *fileSystem) newHandle(fd int, req lockReq, scan string, leases []*lockmgr.Lease) *handle {
	h := &handle{LoopbackFile: fs.NewLoopbackFileFromOS(os.NewFile(uintptr(fd), req.path)), fsys: fsys, req: req, scan: scan, fd: fd}
	if len(leases) > 0 {
		h.lease = leases[0]
	}
	fsys.stats.opens.Add(1)
	return h
}

var _ = (fs.NodeCopyFileRanger)((*node)(nil))

// CopyFileRange copies between the backing descriptors of our handles,
// with go-fuse's loopback implementation (it uses no path). The output
// handle is open for writing, so its exclusive lease covers the copy.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	var lb fs.LoopbackNode
	return lb.CopyFileRange(ctx, unwrapFile(fhIn), offIn, out, unwrapFile(fhOut), offOut, length, flags)
}
