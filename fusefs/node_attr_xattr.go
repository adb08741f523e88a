package fusefs

import (
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"scanlockfs/lockmgr"
)

// Attributes and extended attributes. Changes take the exclusive lock on
// the node's scan for the duration of the operation; reads (Getattr,
// Statx, Readlink, Getxattr, Listxattr, Statfs) take none. All of them
// work on a descriptor of the checked inode (node_backing.go), never on a
// path: a name swapped for a symlink is not followed, and a change cannot
// land on another inode than the one that was checked.

var _ = (fs.NodeGetattrer)((*node)(nil))

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fga, ok := f.(fs.FileGetattrer); ok {
		return n.toldAttr(fga.Getattr(ctx, out), &out.Attr)
	}
	fd, st, errno := n.openPath()
	if errno != 0 {
		return errno
	}
	unix.Close(fd)
	out.FromStat(&st)
	n.tell(stampOfStat(&st))
	return 0
}

var _ = (fs.NodeStatxer)((*node)(nil))

func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if fsx, ok := f.(fs.FileStatxer); ok {
		errno := fsx.Statx(ctx, flags, mask, out)
		if errno == 0 {
			n.tell(stampOfStatx(&out.Statx))
		}
		return errno
	}
	fd, _, errno := n.openPath()
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	var x unix.Statx_t
	sync := int(flags) & (unix.AT_STATX_FORCE_SYNC | unix.AT_STATX_DONT_SYNC)
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW|sync, int(mask), &x); err != nil {
		return n.errno(err)
	}
	out.FromStatx(&x)
	n.tell(stampOfStatx(&out.Statx))
	return 0
}

var _ = (fs.NodeReadlinker)((*node)(nil))

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	fd, st, errno := n.openPath()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(fd)
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return nil, syscall.EINVAL
	}
	for l := 256; ; l *= 2 {
		buf := make([]byte, l)
		sz, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return nil, n.errno(err)
		}
		if sz < len(buf) {
			return buf[:sz], 0
		}
	}
}

var _ = (fs.NodeStatfser)((*node)(nil))

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	fd, _, errno := n.openPath()
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	var s syscall.Statfs_t
	if err := syscall.Fstatfs(fd, &s); err != nil {
		return n.errno(err)
	}
	out.FromStatfsT(&s)
	return 0
}

var _ = (fs.NodeSetattrer)((*node)(nil))

// Setattr covers truncate(2), chmod, chown and utimens, with or without
// a file handle. A handle whose lease is exclusive already covers the
// change; with a shared one (ftruncate or futimens on a descriptor
// opened for reading, or the truncate of open(O_RDONLY|O_TRUNC)) the
// caller upgrades for the duration of the change, which is immediate when
// it is the only holder.
//
// A SETATTR that changes nothing (chown(path, -1, -1)) takes no lock:
// the kernel checks no permission for it, so it must not let anyone
// queue for the scan exclusively (see noChange).
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly {
		return syscall.EROFS
	}
	if noChange(in) {
		return n.Getattr(ctx, f, out)
	}
	defer n.fsys.notify.changingAttrs(ctx, n)()
	scan, rel := n.scan()
	h, isHandle := f.(*handle)
	if isHandle {
		scan = h.scan
		if h.lease != nil && h.lease.Mode() == lockmgr.Exclusive {
			scan = ""
		}
	}
	return n.exclusive(ctx, "setattr", rel, []string{scan}, func() syscall.Errno {
		if isHandle {
			// The handle's descriptor is the inode that was opened.
			return n.toldAttr(h.LoopbackFile.Setattr(ctx, in, out), &out.Attr)
		}
		return n.toldAttr(n.setattr(in, out), &out.Attr)
	})
}

// noChange reports whether a SETATTR changes nothing: none of mode,
// owner, group, size or times is set (the kernel sends such a request for
// chown(path, -1, -1), which it allows to anyone).
func noChange(in *fuse.SetAttrIn) bool {
	const changes = fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID | fuse.FATTR_SIZE |
		fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW
	return in.Valid&changes == 0
}

// setattr is a handle-less SETATTR, on an O_PATH descriptor of the
// checked inode.
func (n *node) setattr(in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	fd, st, errno := n.openPath()
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	if m, ok := in.GetMode(); ok {
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return syscall.EOPNOTSUPP // as fchmodat(AT_SYMLINK_NOFOLLOW)
		}
		if err := unix.Chmod(procPath(fd), m); err != nil {
			return n.errno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		suid, sgid := -1, -1
		if uok {
			suid = int(uid)
		}
		if gok {
			sgid = int(gid)
		}
		if err := unix.Fchownat(fd, "", suid, sgid, unix.AT_EMPTY_PATH); err != nil {
			return n.errno(err)
		}
	}
	// Truncate before setting times, so an explicit mtime is not
	// clobbered by the truncate.
	if sz, ok := in.GetSize(); ok {
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return syscall.EINVAL
		}
		if err := unix.Truncate(procPath(fd), int64(sz)); err != nil {
			return n.errno(err)
		}
	}
	if errno := n.utimens(fd, in); errno != 0 {
		return errno
	}
	st2, _, err := statx(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return n.errno(err)
	}
	out.FromStat(&st2)
	return 0
}

// utimens sets the times in asked for on the inode open at fd (O_PATH).
func (n *node) utimens(fd int, in *fuse.SetAttrIn) syscall.Errno {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	set := false
	for i, v := range []struct {
		now, valid uint32
		get        func() (uint64, uint32)
	}{
		{fuse.FATTR_ATIME_NOW, fuse.FATTR_ATIME, func() (uint64, uint32) { return in.Atime, in.Atimensec }},
		{fuse.FATTR_MTIME_NOW, fuse.FATTR_MTIME, func() (uint64, uint32) { return in.Mtime, in.Mtimensec }},
	} {
		switch {
		case in.Valid&v.now != 0:
			ts[i] = unix.Timespec{Nsec: unix.UTIME_NOW}
			set = true
		case in.Valid&v.valid != 0:
			sec, nsec := v.get()
			ts[i] = unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
			set = true
		}
	}
	if !set {
		return 0
	}
	return n.errno(unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd), ts, 0))
}

// systemXattr reports whether attr is in the system.* namespace (POSIX
// ACLs): the kernel checks no permission for changing those on a FUSE
// mount without its own ACL support, so scanlockfs does (mayChangeSystem).
func systemXattr(attr string) bool { return strings.HasPrefix(attr, "system.") }

// mayChangeSystem is the check the kernel leaves out for system.* names:
// as on a local file system, only the owner of the inode (or root) may
// change its ACLs. It is made before any lock is asked for, so a caller
// without the right cannot queue for the scan, and again on the inode the
// change is made on.
func (n *node) mayChangeSystem(ctx context.Context, st *syscall.Stat_t) syscall.Errno {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Uid == 0 || c.Uid == st.Uid {
		return 0
	}
	return syscall.EPERM
}

// xattrChange runs a setxattr or removexattr of attr on the checked
// inode, under the exclusive lock of n's scan.
func (n *node) xattrChange(ctx context.Context, op, attr string, fn func(path string) error) syscall.Errno {
	if n.fsys.readOnly {
		return syscall.EROFS
	}
	if systemXattr(attr) {
		fd, st, errno := n.openPath()
		if errno != 0 {
			return errno
		}
		unix.Close(fd)
		if errno := n.mayChangeSystem(ctx, &st); errno != 0 {
			return errno
		}
	}
	scan, rel := n.scan()
	return n.exclusive(ctx, op, rel, []string{scan}, func() syscall.Errno {
		fd, st, errno := n.openPath()
		if errno != 0 {
			return errno
		}
		defer unix.Close(fd)
		if systemXattr(attr) {
			if errno := n.mayChangeSystem(ctx, &st); errno != 0 {
				return errno
			}
		}
		return n.errno(fn(procPath(fd)))
	})
}

var _ = (fs.NodeSetxattrer)((*node)(nil))

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.xattrChange(ctx, "setxattr", attr, func(p string) error {
		return unix.Setxattr(p, attr, data, int(flags))
	})
}

var _ = (fs.NodeRemovexattrer)((*node)(nil))

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.xattrChange(ctx, "removexattr", attr, func(p string) error {
		return unix.Removexattr(p, attr)
	})
}

var _ = (fs.NodeGetxattrer)((*node)(nil))

// Getxattr reads through a descriptor of an open file of n if there is
// one (node_files.go), else through the checked inode.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return n.readXattr(
		func(fd int) (int, error) { return unix.Fgetxattr(fd, attr, dest) },
		func(path string) (int, error) { return unix.Getxattr(path, attr, dest) })
}

var _ = (fs.NodeListxattrer)((*node)(nil))

// Listxattr is like Getxattr.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return n.readXattr(
		func(fd int) (int, error) { return unix.Flistxattr(fd, dest) },
		func(path string) (int, error) { return unix.Listxattr(path, dest) })
}

// readXattr is an xattr read of n: fromFD on a descriptor of an open file
// of n, or else fromPath on the /proc/self/fd path of n's checked inode.
func (n *node) readXattr(fromFD func(fd int) (int, error), fromPath func(path string) (int, error)) (uint32, syscall.Errno) {
	var sz int
	var err error
	if !n.withOpenFD(func(fd int) { sz, err = fromFD(fd) }) {
		fd, _, errno := n.openPath()
		if errno != 0 {
			return 0, errno
		}
		defer unix.Close(fd)
		sz, err = fromPath(procPath(fd))
	}
	return uint32(max(sz, 0)), n.errnoQuiet(err)
}

// errnoQuiet maps a system call's error without logging: ENODATA and
// ERANGE are the normal answers of xattr reads.
func (n *node) errnoQuiet(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return n.errno(err)
}
