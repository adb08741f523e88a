package fusefs

import (
	"context"
	"slices"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Directory operations. Lookups and listings take no lock, so that ls
// never waits for a writer. Changes take the exclusive lock on the scans
// they touch for the duration of the operation only. At the root, a
// directory is a scan: creating, removing or renaming it locks it. Each
// change resolves its directory only once its lock is granted (n.change).

var _ = (fs.NodeLookuper)((*node)(nil))

// Lookup hides the real lock directory at the root and shows the status
// view (locksdir.go) under the name .locks instead.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.isHidden(name) {
		if name == statusDirName && n.fsys.status != nil {
			return n.fsys.lookupStatusDir(ctx, out)
		}
		return nil, syscall.ENOENT
	}
	n.watch()
	st, btime, errno := n.lookupStat(name)
	if errno != 0 {
		return nil, errno
	}
	out.Attr.FromStat(&st)
	n.entryTimeout(out)
	return n.newNode(ctx, &st, btime), 0
}

var _ = (fs.NodeOpendirHandler)((*node)(nil))

// OpendirHandle opens the checked directory itself (a directory swapped
// for a symlink is not followed) and, at the root, filters the real lock
// directory out of the listing and adds the status view. go-fuse reads
// directories through the handle returned here.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	n.watch() // READDIRPLUS gives the kernel names
	fd, _, errno := n.openSelf(unix.O_RDONLY | unix.O_DIRECTORY)
	if errno != 0 {
		return nil, 0, errno
	}
	ds, errno := fs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		unix.Close(fd)
		return nil, 0, errno
	}
	d := &filteredDir{inner: ds}
	if !n.isRoot() {
		return d, 0, 0
	}
	d.hide = []string{statusDirName}
	if n.fsys.hidden != "" && n.fsys.hidden != statusDirName {
		d.hide = append(d.hide, n.fsys.hidden)
	}
	if n.fsys.status != nil {
		e := statusDirEntry()
		d.extra = &e
	}
	return d, 0, 0
}

// refuseName is the common refusal of a change of entry name in n: the
// lock directory and the status view cannot be touched, nothing can on a
// read-only mount.
func (n *node) refuseName(name string) syscall.Errno {
	if n.isHidden(name) {
		return syscall.EPERM
	}
	if n.fsys.readOnly {
		return syscall.EROFS
	}
	return 0
}

var _ = (fs.NodeMkdirer)((*node)(nil))

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, "mkdir", name, unix.S_IFDIR, out, func(dfd int) error {
		return unix.Mkdirat(dfd, name, mode)
	})
}

var _ = (fs.NodeRmdirer)((*node)(nil))

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno := n.refuseName(name); errno != 0 {
		return errno
	}
	return n.change(ctx, "rmdir", n.childPath(name), []string{n.entryScan(name, true)}, func(dfd int) syscall.Errno {
		return n.errno(unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR))
	})
}

var _ = (fs.NodeUnlinker)((*node)(nil))

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := n.refuseName(name); errno != 0 {
		return errno
	}
	return n.change(ctx, "unlink", n.childPath(name), []string{n.entryScan(name, false)}, func(dfd int) syscall.Errno {
		return n.errno(unix.Unlinkat(dfd, name, 0))
	})
}

var _ = (fs.NodeMknoder)((*node)(nil))

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, "mknod", name, mode&unix.S_IFMT, out, func(dfd int) error {
		return unix.Mknodat(dfd, name, mode, int(rdev))
	})
}

var _ = (fs.NodeSymlinker)((*node)(nil))

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.makeEntry(ctx, "symlink", name, unix.S_IFLNK, out, func(dfd int) error {
		return unix.Symlinkat(target, dfd, name)
	})
}

// makeEntry is mkdir, mknod and symlink: under the exclusive lock of the
// entry's scan (at the root, a new directory is a scan), mk creates
// name of type typ in dfd, the checked descriptor of n, and adoptNew
// gives it to the caller.
func (n *node) makeEntry(ctx context.Context, op, name string, typ uint32, out *fuse.EntryOut, mk func(dfd int) error) (*fs.Inode, syscall.Errno) {
	if errno := n.refuseName(name); errno != 0 {
		return nil, errno
	}
	var child *fs.Inode
	scan := n.entryScan(name, typ == unix.S_IFDIR)
	errno := n.change(ctx, op, n.childPath(name), []string{scan}, func(dfd int) syscall.Errno {
		if err := mk(dfd); err != nil {
			return n.errno(err)
		}
		var errno syscall.Errno
		child, errno = n.adoptNew(ctx, dfd, name, typ, out)
		return errno
	})
	if errno != 0 {
		return nil, errno
	}
	return child, 0
}

var _ = (fs.NodeLinker)((*node)(nil))

// Link locks the scan of the existing file and that of the new name
// (both, in sorted order, when they differ). The new name is made from a
// descriptor of the checked target inode, never from its path.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.refuseName(name); errno != 0 {
		return nil, errno
	}
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	// A file without a name (O_TMPFILE, or unlinked while open) cannot
	// be found on SOURCE: LINK carries no descriptor.
	if _, parent := tn.Parent(); parent == nil {
		return nil, syscall.EXDEV
	}
	targetScan, targetPath := tn.scan()
	path := targetPath + " -> " + n.childPath(name)
	var child *fs.Inode
	errno := n.change(ctx, "link", path, []string{targetScan, n.entryScan(name, false)}, func(dfd int) syscall.Errno {
		tfd, _, errno := tn.openPath()
		if errno != 0 {
			return errno
		}
		defer unix.Close(tfd)
		if err := linkFD(tfd, dfd, name); err != nil {
			return n.errno(err)
		}
		st, btime, err := statx(dfd, name, 0)
		if err != nil {
			return n.errno(err)
		}
		out.Attr.FromStat(&st)
		child = n.newNode(ctx, &st, btime)
		return 0
	})
	return child, errno
}

var _ = (fs.NodeRenamer)((*node)(nil))

// Rename locks the scans of both names, in sorted order. At the root a
// name is a scan if what is moved (or what is exchanged with it) is a
// directory.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if _, ok := newParent.(*statusDir); ok {
		return syscall.EROFS
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if n.isHidden(name) || np.isHidden(newName) {
		return syscall.EPERM
	}
	if n.fsys.readOnly {
		return syscall.EROFS
	}
	dirLike := false
	if n.isRoot() || np.isRoot() {
		dirLike = n.isDirAt(name) || np.isDirAt(newName)
	}
	path := n.childPath(name) + " -> " + np.childPath(newName)
	return n.change(ctx, "rename", path, []string{n.entryScan(name, dirLike), np.entryScan(newName, dirLike)}, func(dfd int) syscall.Errno {
		ndfd := dfd
		if np != n {
			fd, done, errno := np.openDir()
			if errno != 0 {
				return errno
			}
			defer done()
			ndfd = fd
		}
		return n.errno(unix.Renameat2(dfd, name, ndfd, newName, uint(flags)))
	})
}

// filteredDir is every directory handle of the mount: go-fuse's
// directory stream on a descriptor of the checked directory, at the root
// without the names in hide and with extra (the status view) as its first
// entry. Only the directory operations below are forwarded; ioctls are
// not (the stream would run them on the backing descriptor as root).
type filteredDir struct {
	inner fs.FileHandle
	hide  []string
	extra *fuse.DirEntry
	// extraDone is set once extra was returned, or when a seek moved
	// past it.
	extraDone bool
}

// extraOff is the directory offset after extra: the position of the
// loopback stream's first entry. Offsets are the backing file system's
// cookies (ext4: 63-bit hashes; tmpfs, btrfs: small indices; xfs: 32
// bits), which practically never take this value.
const extraOff = 0x7FFF_FFFF_FFFF_FF00

var (
	_ = (fs.FileReaddirenter)((*filteredDir)(nil))
	_ = (fs.FileSeekdirer)((*filteredDir)(nil))
	_ = (fs.FileReleasedirer)((*filteredDir)(nil))
	_ = (fs.FileFsyncdirer)((*filteredDir)(nil))
)

func (d *filteredDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.extra != nil && !d.extraDone {
		d.extraDone = true
		e := *d.extra
		e.Off = extraOff
		return &e, 0
	}
	r, ok := d.inner.(fs.FileReaddirenter)
	if !ok {
		return nil, 0
	}
	for {
		de, errno := r.Readdirent(ctx)
		if errno != 0 || de == nil || !slices.Contains(d.hide, de.Name) {
			return de, errno
		}
	}
}

// Seekdir to 0 starts again with extra; to extraOff, with the loopback
// stream's first entry.
func (d *filteredDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	s, ok := d.inner.(fs.FileSeekdirer)
	if !ok {
		return syscall.ENOTSUP
	}
	d.extraDone = off != 0
	if d.extra != nil && off == extraOff {
		off = 0
	}
	return s.Seekdir(ctx, off)
}

func (d *filteredDir) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.inner.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

func (d *filteredDir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if f, ok := d.inner.(fs.FileFsyncdirer); ok {
		return f.Fsyncdir(ctx, flags)
	}
	return syscall.ENOTSUP
}
