package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
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
// umask, and no set-group-ID for a group the caller is not in). Root is
// daemonIsRoot, read once, as for giveToCaller: not a getuid(2) per create.
func createMode(mode uint32) uint32 {
	if daemonIsRoot {
		return mode &^ setIDBits
	}
	return mode
}

// keepSetID gives the file fd, just created with createMode(mode) and
// given to its creator, the set-ID bits of mode, if it asked for any, and
// updates st. It only sets what the caller could set with chmod(2)
// itself: set-user-ID on a file of its own, set-group-ID on a file of its
// own of its own group (FUSE does not tell the caller's other groups). It
// costs nothing unless the mode has set-ID bits. The file exists whatever
// happens here, so a failure is logged and the create succeeds without
// the bits.
func (fsys *fileSystem) keepSetID(ctx context.Context, fd int, path string, mode uint32, st *syscall.Stat_t) {
	if mode&setIDBits == 0 || createMode(mode) == mode {
		return
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok || st.Uid != caller.Uid {
		return
	}
	if st.Gid != caller.Gid {
		if mode &^= syscall.S_ISGID; mode&setIDBits == 0 {
			return
		}
	}
	perm := st.Mode&0o777 | mode&setIDBits
	if err := unix.Fchmod(fd, perm); err != nil {
		fsys.log.WithField("path", path).WithError(err).Warn("could not set the set-ID bits of a new file")
		return
	}
	st.Mode = st.Mode&^0o7777 | perm
}
