package fusefs

import (
	"context"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// setIDBits are the mode bits that chown(2) clears on a regular file,
// whoever calls it.
const setIDBits = syscall.S_ISUID | syscall.S_ISGID

// createMode is the mode a CREATE asks the backing file system for. As
// root, the loopback creates the file as root and then gives it to the
// caller with chown, which clears the set-user-ID and set-group-ID bits:
// those are left out at creation (no root-owned set-ID file exists, even
// for an instant) and set by keepSetID once the file is the caller's. The
// kernel has already applied its rules to the mode it sent (the caller's
// umask, and no set-group-ID for a group the caller is not in).
func createMode(mode uint32) uint32 {
	if os.Getuid() == 0 {
		return mode &^ setIDBits
	}
	return mode
}

// keepSetID gives the file just created by Create with createMode(mode)
// the set-ID bits of mode, if it asked for any, and updates out. It only
// sets what the caller could set with chmod(2) itself: set-user-ID on a
// file of its own, set-group-ID only if that file's group is the caller's
// primary group (FUSE does not tell the caller's other groups). It costs
// nothing unless the mode has set-ID bits. The file exists whatever
// happens here, so a failure is logged and the create succeeds without
// the bits.
func (fsys *fileSystem) keepSetID(ctx context.Context, fh fs.FileSetattrer, path string, mode uint32, out *fuse.EntryOut) {
	if mode&setIDBits == 0 || createMode(mode) == mode {
		return
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok || out.Attr.Uid != caller.Uid {
		return
	}
	if out.Attr.Gid != caller.Gid {
		if mode &^= syscall.S_ISGID; mode&setIDBits == 0 {
			return
		}
	}
	in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE, Mode: mode & 0o7777}}
	var attr fuse.AttrOut
	if errno := fh.Setattr(ctx, in, &attr); errno != 0 {
		fsys.log.WithField("path", path).WithField("errno", errno).Warn("could not set the set-ID bits of a new file")
		return
	}
	out.Attr = attr.Attr
}
