package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

var _ = (fs.NodeIoctler)((*node)(nil))

// Ioctl answers ENOTTY to every ioctl on a file or directory of the
// mount, whatever its handle (go-fuse asks the node before the handle).
// None is passed through: the daemon would run it as root on the backing
// descriptor, and no ioctl is needed by the programs this mount serves.
// The status view's handles do not implement ioctls: go-fuse answers
// ENOTTY for them.
func (n *node) Ioctl(ctx context.Context, f fs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}
