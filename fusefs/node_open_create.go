package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

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

var _ = (fs.NodeOpener)((*node)(nil))

// Open takes the scan lock before it opens the backing file, so that an
// O_TRUNC truncates under the lock, and hands the lease to the file
// handle, which keeps it until RELEASE.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.readOnly && isWriteOpen(flags) {
		return nil, 0, syscall.EROFS
	}
	scan, rel := n.scan()
	req := lockReq{op: "open", path: rel, mode: openMode(flags), nonblock: flags&syscall.O_NONBLOCK != 0}
	leases, errno := n.fsys.lock(ctx, req, scan)
	if errno != 0 {
		return nil, 0, errno
	}
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		n.fsys.unlock(req, leases)
		return nil, 0, errno
	}
	h, errno := n.fsys.newHandle(ctx, fh, req, scan, leases)
	return h, fuseFlags, errno
}

var _ = (fs.NodeCreater)((*node)(nil))

// Create takes the exclusive lock on the scan of the new file; the
// handle keeps it until RELEASE, like an open for writing.
//
// The kernel holds the directory's inode lock during CREATE, so while a
// create waits for its scan, other creates, unlinks and lookups of new
// names in that directory wait too.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.isHidden(name) {
		return nil, nil, 0, syscall.EPERM
	}
	if n.fsys.readOnly {
		return nil, nil, 0, syscall.EROFS
	}
	scan := n.entryScan(name, false)
	req := lockReq{op: "create", path: n.childPath(name), mode: lockmgr.Exclusive, nonblock: flags&syscall.O_NONBLOCK != 0}
	leases, errno := n.fsys.lock(ctx, req, scan)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	child, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, createMode(mode), out)
	if errno != 0 {
		n.fsys.unlock(req, leases)
		return nil, nil, 0, errno
	}
	h, errno := n.fsys.newHandle(ctx, fh, req, scan, leases)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	n.fsys.keepSetID(ctx, h.LoopbackFile, req.path, mode, out)
	return child, h, fuseFlags, 0
}

var _ = (fs.NodeTmpfiler)((*node)(nil))

// Tmpfile (open with O_TMPFILE) is a create in directory n.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.readOnly {
		return nil, nil, 0, syscall.EROFS
	}
	scan, rel := n.scan()
	req := lockReq{op: "tmpfile", path: rel + "/(O_TMPFILE)", mode: lockmgr.Exclusive, nonblock: flags&syscall.O_NONBLOCK != 0}
	leases, errno := n.fsys.lock(ctx, req, scan)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	child, fh, fuseFlags, errno := n.LoopbackNode.Tmpfile(ctx, flags, mode, out)
	if errno != 0 {
		n.fsys.unlock(req, leases)
		return nil, nil, 0, errno
	}
	h, errno := n.fsys.newHandle(ctx, fh, req, scan, leases)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return child, h, fuseFlags, 0
}

// newHandle wraps the loopback file fh and the leases of its open. If fh
// is not a loopback file (which go-fuse never does today), it is closed,
// the leases are released and EIO returned, rather than serving a file
// without its lock.
func (fsys *fileSystem) newHandle(ctx context.Context, fh fs.FileHandle, req lockReq, scan string, leases []*lockmgr.Lease) (*handle, syscall.Errno) {
	lf, ok := fh.(*fs.LoopbackFile)
	if !ok {
		if r, ok := fh.(fs.FileReleaser); ok {
			r.Release(ctx)
		}
		fsys.unlock(req, leases)
		fsys.log.Errorf("BUG: loopback %s returned a %T, not *fs.LoopbackFile", req.op, fh)
		return nil, syscall.EIO
	}
	h := &handle{LoopbackFile: lf, fsys: fsys, req: req, scan: scan}
	if len(leases) > 0 {
		h.lease = leases[0]
	}
	fsys.stats.opens.Add(1)
	return h, 0
}

var _ = (fs.NodeCopyFileRanger)((*node)(nil))

// CopyFileRange hands the loopback files inside our handles to the
// loopback implementation, which only accepts *fs.LoopbackFile (otherwise
// the kernel falls back to reading and writing). The output handle is open
// for writing, so its exclusive lease covers the copy.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	return n.LoopbackNode.CopyFileRange(ctx, unwrapFile(fhIn), offIn, out, unwrapFile(fhOut), offOut, length, flags)
}
