package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"scanlockfs/lockmgr"
)

// Attribute and extended attribute changes take the exclusive lock on
// the node's scan for the duration of the operation. Getattr, Statx,
// Getxattr and Listxattr take none.

var _ = (fs.NodeSetattrer)((*node)(nil))

// Setattr covers truncate(2), chmod, chown and utimens, with or without
// a file handle. A handle whose lease is exclusive already covers the
// change; with a shared one (ftruncate or futimens on a descriptor
// opened for reading, or the truncate of open(O_RDONLY|O_TRUNC)) the
// caller upgrades for the duration of the change, which is immediate when
// it is the only holder.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly {
		return syscall.EROFS
	}
	scan, rel := n.scan()
	if h, ok := f.(*handle); ok {
		scan = h.scan
		if h.lease != nil && h.lease.Mode() == lockmgr.Exclusive {
			scan = ""
		}
	}
	unlock, errno := n.lockOp(ctx, "setattr", rel, scan)
	if errno != 0 {
		return errno
	}
	defer unlock()
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

var _ = (fs.NodeSetxattrer)((*node)(nil))

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.fsys.readOnly {
		return syscall.EROFS
	}
	scan, rel := n.scan()
	unlock, errno := n.lockOp(ctx, "setxattr", rel, scan)
	if errno != 0 {
		return errno
	}
	defer unlock()
	return n.LoopbackNode.Setxattr(ctx, attr, data, flags)
}

var _ = (fs.NodeRemovexattrer)((*node)(nil))

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.fsys.readOnly {
		return syscall.EROFS
	}
	scan, rel := n.scan()
	unlock, errno := n.lockOp(ctx, "removexattr", rel, scan)
	if errno != 0 {
		return errno
	}
	defer unlock()
	return n.LoopbackNode.Removexattr(ctx, attr)
}
