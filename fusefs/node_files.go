package fusefs

import (
	"slices"
	"sync"
)

// The descriptors of a node's open files. The kernel asks for
// security.capability (GETXATTR) before every write(2) to a file, to know
// whether the write must drop file capabilities: on the path of every
// write, while the file is open. Resolving the node by path for it
// (openat2, statx, getxattr through /proc/self/fd, close) cost more than
// the loopback's one lgetxattr by path. A descriptor of an open file of
// the node is a descriptor of the very inode the kernel asks about
// (checked at its open, node_backing.go), so xattr reads use it: one
// fgetxattr, no path, no symlink to follow, and right also when the name
// was replaced on SOURCE since the open. Xattr changes take the scan lock
// and resolve the node as before.

// openFiles are the backing descriptors of a node's open file handles.
type openFiles struct {
	mu  sync.RWMutex // read side while a descriptor is used, write side to add or remove one
	fds []int
}

// attach makes h's descriptor one of n's open files, until h's release.
func (h *handle) attach(n *node) {
	if n == nil {
		return
	}
	h.node = n
	f := &n.files
	f.mu.Lock()
	f.fds = append(f.fds, h.fd)
	f.mu.Unlock()
}

// detach removes h's descriptor from its node's open files, before it
// is closed.
func (h *handle) detach() {
	if h.node == nil {
		return
	}
	f := &h.node.files
	f.mu.Lock()
	if i := slices.Index(f.fds, h.fd); i >= 0 {
		f.fds = slices.Delete(f.fds, i, i+1)
	}
	f.mu.Unlock()
}

// withOpenFD runs fn on a descriptor of one of n's open files, if n has
// one, and reports whether it did. The descriptor stays open while fn
// runs.
func (n *node) withOpenFD(fn func(fd int)) bool {
	f := &n.files
	f.mu.RLock()
	defer f.mu.RUnlock()
	if len(f.fds) == 0 {
		return false
	}
	fn(f.fds[0])
	return true
}
