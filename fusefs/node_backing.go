package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Resolving a node on the backing file system (see backing.go). Every
// operation calls these after its scan lock is granted, never before:
// a resolution made before a lock wait may name something else by then.

// openSelf opens n's backing inode with flags and checks that it is the
// inode the kernel knows as n: same type and inode number, else ESTALE
// (the kernel then looks the name up again). With O_PATH|O_NOFOLLOW a
// symlink node is opened itself; other flags fail on a symlink.
func (n *node) openSelf(flags int) (int, syscall.Stat_t, syscall.Errno) {
	fd, err := n.fsys.back.open(n.relPath(), flags, 0)
	if err != nil {
		return -1, syscall.Stat_t{}, toErrno(n.fsys.log, err)
	}
	st, _, err := statx(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		unix.Close(fd)
		return -1, syscall.Stat_t{}, toErrno(n.fsys.log, err)
	}
	if !n.isRoot() && !n.fsys.back.isSame(&st, n.StableAttr()) {
		unix.Close(fd)
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			// Swapped for a symlink: ELOOP, as an open with
			// O_NOFOLLOW would answer.
			return -1, syscall.Stat_t{}, syscall.ELOOP
		}
		return -1, syscall.Stat_t{}, n.stale()
	}
	return fd, st, 0
}

// openPath is openSelf for an O_PATH descriptor of n, symlinks included.
func (n *node) openPath() (int, syscall.Stat_t, syscall.Errno) {
	return n.openSelf(unix.O_PATH | unix.O_NOFOLLOW)
}

// openDir returns an O_PATH descriptor of directory n, checked like
// openSelf (except the root, which is SOURCE whatever it is now), and the
// function that closes it.
func (n *node) openDir() (int, func(), syscall.Errno) {
	if fd, done, ok := n.keptDirAtPath(); ok {
		return fd, done, 0
	}
	fd, _, errno := n.openSelf(unix.O_PATH | unix.O_DIRECTORY)
	if errno != 0 {
		return -1, nil, errno
	}
	return fd, func() { unix.Close(fd) }, 0
}

// maxKeptDepth is the deepest directory that keptDirAtPath checks name
// by name: one statx per level, against openat2, statx and close.
const maxKeptDepth = 2

// keptDirAtPath returns n's kept descriptor (node_dirfd.go) if n is
// still at its path: each name from SOURCE down to n, looked up without
// following a symlink in the directory above it (lookupStat: SOURCE's
// path, or the parent's kept descriptor), leads to the inode of its
// node. That is what openSelf proves by resolving the path again, for a
// scan's directory in one system call instead of three. It reports false
// when n is the root, deeper than maxKeptDepth, has no kept descriptor,
// or the check fails; openSelf then decides. The returned function gives
// the descriptor back.
func (n *node) keptDirAtPath() (int, func(), bool) {
	if n.isRoot() {
		return -1, nil, false
	}
	d := &n.dir
	d.mu.RLock()
	if !d.ok || !n.atPath(maxKeptDepth) {
		d.mu.RUnlock()
		return -1, nil, false
	}
	return d.fd, d.mu.RUnlock, true
}

// atPath reports whether directory n, at most depth levels below the
// root, is still at its path (see keptDirAtPath).
func (n *node) atPath(depth int) bool {
	if depth <= 0 {
		return false
	}
	name, parent := n.Parent()
	if parent == nil {
		return false
	}
	p, ok := parent.Operations().(*node)
	if !ok || !p.isRoot() && !p.atPath(depth-1) {
		return false
	}
	st, btime, errno := p.lookupStat(name)
	return errno == 0 && n.fsys.back.sameBorn(&st, btime, n)
}

// sameBorn reports whether st (born at btime) is the very inode of node
// n: same inode number and birth time. A kept descriptor may be of a
// directory removed since, whose inode number a new one got; only the
// birth time tells them apart, so without one nothing is the same.
func (b *backing) sameBorn(st *syscall.Stat_t, btime unix.StatxTimestamp, n *node) bool {
	want := n.StableAttr()
	return want.Gen != noBirthGen && b.stableAttr(st, btime) == want
}

// stale is the answer when the backing name no longer leads to n's inode
// (replaced, possibly by a symlink, since the kernel's lookup).
func (n *node) stale() syscall.Errno {
	if n.fsys.debug {
		n.fsys.log.WithField("path", n.relPath()).Debug("backing inode changed since the lookup: ESTALE")
	}
	return syscall.ESTALE
}

// errno maps a backing system call's error.
func (n *node) errno(err error) syscall.Errno {
	return toErrno(n.fsys.log, err)
}

// daemonIsRoot: new files are given to their caller only when the daemon
// runs as root (as go-fuse's loopback does); otherwise they belong to the
// daemon's user, the only one who can use a mount without allow_other.
var daemonIsRoot = unix.Geteuid() == 0

// adoptNew finishes the creation of name in dfd (mkdir, mknod, symlink):
// it opens what was created without following it, checks that it is of
// the type created and still the daemon's, and gives it to the caller.
func (n *node) adoptNew(ctx context.Context, dfd int, name string, typ uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, n.errno(err)
	}
	defer unix.Close(fd)
	st, btime, err := statx(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return nil, n.errno(err)
	}
	if st.Mode&unix.S_IFMT != typ {
		return nil, n.stale()
	}
	if errno := n.giveToCaller(ctx, fd, dfd, &st); errno != 0 {
		return nil, errno
	}
	out.Attr.FromStat(&st)
	return n.newNode(ctx, &st, btime), 0
}

// giveToCaller makes the caller the owner of the new inode open at fd
// (created in directory dfd), as a local file system would: its uid, and
// its gid unless the directory is setgid (the inode then keeps the
// directory's group, set by the kernel). It refuses an inode the daemon
// does not own: not the one it just created.
func (n *node) giveToCaller(ctx context.Context, fd, dfd int, st *syscall.Stat_t) syscall.Errno {
	c, ok := fuse.FromContext(ctx)
	if !daemonIsRoot || !ok {
		return 0
	}
	if st.Uid != 0 {
		return n.stale()
	}
	if c.Uid == 0 && c.Gid == st.Gid {
		return 0 // root's own group: nothing to give, setgid directory or not
	}
	gid := int(c.Gid)
	var dst unix.Stat_t
	if err := unix.Fstat(dfd, &dst); err == nil && dst.Mode&unix.S_ISGID != 0 {
		gid = -1
	}
	if c.Uid == 0 && (gid == -1 || uint32(gid) == st.Gid) {
		return 0
	}
	if err := unix.Fchownat(fd, "", int(c.Uid), gid, unix.AT_EMPTY_PATH); err != nil {
		n.fsys.log.WithField("path", n.relPath()).WithError(err).Warn("cannot give a new file to its creator")
		return 0
	}
	st.Uid = c.Uid
	if gid != -1 {
		st.Gid = uint32(gid)
	}
	return 0
}

// linkFD makes name in dfd a new link to the inode open at tfd (O_PATH).
func linkFD(tfd, dfd int, name string) error {
	if daemonIsRoot { // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH
		return unix.Linkat(tfd, "", dfd, name, unix.AT_EMPTY_PATH)
	}
	return unix.Linkat(unix.AT_FDCWD, procPath(tfd), dfd, name, unix.AT_SYMLINK_FOLLOW)
}
