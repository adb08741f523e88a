package fusefs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// Descriptors of directories in use. A LOOKUP below the root resolves
// its directory on SOURCE; by path that is openat2 + statx (the inode
// check) + close per entry, which made READDIRPLUS of a big directory cost
// 1.6 times the loopback's. So a directory node keeps the O_PATH
// descriptor of its checked inode from its first lookup until the kernel
// forgets it (OnForget), and a lookup in it is one statx relative to
// that descriptor, with no symlink followed.
//
// Only lookups use it: they change nothing and take no lock, and what
// they find is checked again (by path, after the lock) by whatever
// operation then uses the new node. A directory that was moved on SOURCE
// meanwhile is still the inode the kernel knows; changes (node_dir_ops.go)
// resolve the path again after their lock is granted, as before.
//
// At most maxDirFDs descriptors are kept per mount; beyond that a lookup
// opens and closes its directory as before.

// maxDirFDs bounds the directory descriptors a mount keeps.
var maxDirFDs int64 = 1024 // a variable for tests

// dirFD is a directory node's kept descriptor.
type dirFD struct {
	mu sync.RWMutex // read side while fd is in use, write side to set or close it
	fd int
	ok bool // fd is open and kept
	// forgotten is set by OnForget: nothing is kept any more, so that a
	// node go-fuse dropped holds no descriptor.
	forgotten bool
}

// lookupStat stats name in directory n for a lookup, in one call. At the
// root: SOURCE's path has no symlink (resolved at the mount) and the name
// is one component, not followed. Below it: relative to the directory's
// kept descriptor.
func (n *node) lookupStat(name string) (syscall.Stat_t, unix.StatxTimestamp, syscall.Errno) {
	if n.isRoot() {
		st, btime, err := statx(unix.AT_FDCWD, n.fsys.back.path+"/"+name, 0)
		return st, btime, n.errno(err)
	}
	return n.statChild(name)
}

// statChild stats name in directory n without following a symlink,
// relative to n's kept descriptor, which it opens (checked) and keeps if
// there is none yet.
func (n *node) statChild(name string) (syscall.Stat_t, unix.StatxTimestamp, syscall.Errno) {
	d := &n.dir
	d.mu.RLock()
	if d.ok {
		st, btime, err := statx(d.fd, name, 0)
		d.mu.RUnlock()
		return st, btime, n.errno(err)
	}
	d.mu.RUnlock()
	fd, _, errno := n.openSelf(unix.O_PATH | unix.O_DIRECTORY)
	if errno != 0 {
		return syscall.Stat_t{}, unix.StatxTimestamp{}, errno
	}
	st, btime, err := statx(fd, name, 0)
	if !n.keepDirFD(fd) {
		unix.Close(fd)
	}
	return st, btime, n.errno(err)
}

// keepDirFD keeps fd as n's descriptor if n has none, was not forgotten
// and the mount's budget allows.
func (n *node) keepDirFD(fd int) bool {
	if n.fsys.dirFDs.Add(1) > maxDirFDs {
		n.fsys.dirFDs.Add(-1)
		return false
	}
	d := &n.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ok || d.forgotten {
		n.fsys.dirFDs.Add(-1)
		return false
	}
	d.fd, d.ok = fd, true
	return true
}

var _ = (fs.NodeOnForgetter)((*node)(nil))

// OnForget closes the kept descriptor of a node the kernel forgot, and
// removes its watch (notify.go).
func (n *node) OnForget() {
	n.unwatch()
	d := &n.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	d.forgotten = true
	if d.ok {
		unix.Close(d.fd)
		d.ok = false
		n.fsys.dirFDs.Add(-1)
	}
}
