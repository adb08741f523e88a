package fusefs

import (
	"context"
	"syscall"
)

// No FLUSH. close(2) on a file of the mount sends FLUSH unless the open
// said FOPEN_NOFLUSH (every open and create of ours does, openFlags) or
// the file system once answered ENOSYS (then the kernel stops for the
// whole mount). A FLUSH would cost a round trip per close(2) for nothing:
// the lease is released at RELEASE, not at FLUSH; flock and fcntl locks
// of the mount's clients are kept by the kernel; and go-fuse's loopback
// flush (close of a dup of the backing descriptor) reports nothing on
// SOURCE's local file systems (ext4, xfs, btrfs, tmpfs report write errors
// at write or fsync, never at close; with passthrough the kernel writes
// to the backing file itself). On an NFS SOURCE, a program that must see
// a late write error calls fsync, as on NFS itself with a write cache.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	return syscall.ENOSYS
}
