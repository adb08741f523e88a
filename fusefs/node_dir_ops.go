package fusefs

import (
	"context"
	"slices"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Directory operations. Lookups and listings take no lock, so that ls
// never waits for a writer. Changes take the exclusive lock on the scans
// they touch for the duration of the operation only. At the root, a
// directory is a scan: creating, removing or renaming it locks it.

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
	return n.LoopbackNode.Lookup(ctx, name, out)
}

var _ = (fs.NodeOpendirHandler)((*node)(nil))

// OpendirHandle filters the real lock directory out of the root's
// listing and adds the status view. go-fuse reads directories through
// the handle returned here, so overriding Readdir alone would change
// nothing.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 || !n.isRoot() {
		return fh, fuseFlags, errno
	}
	d := &filteredDir{inner: fh, hide: []string{statusDirName}}
	if n.fsys.hidden != "" && n.fsys.hidden != statusDirName {
		d.hide = append(d.hide, n.fsys.hidden)
	}
	if n.fsys.status != nil {
		e := statusDirEntry()
		d.extra = &e
	}
	return d, fuseFlags, 0
}

var _ = (fs.NodeMkdirer)((*node)(nil))

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.isHidden(name) {
		return nil, syscall.EPERM
	}
	if n.fsys.readOnly {
		return nil, syscall.EROFS
	}
	unlock, errno := n.lockOp(ctx, "mkdir", n.childPath(name), n.entryScan(name, true))
	if errno != 0 {
		return nil, errno
	}
	defer unlock()
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

var _ = (fs.NodeRmdirer)((*node)(nil))

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.isHidden(name) {
		return syscall.EPERM
	}
	if n.fsys.readOnly {
		return syscall.EROFS
	}
	unlock, errno := n.lockOp(ctx, "rmdir", n.childPath(name), n.entryScan(name, true))
	if errno != 0 {
		return errno
	}
	defer unlock()
	return n.LoopbackNode.Rmdir(ctx, name)
}

var _ = (fs.NodeUnlinker)((*node)(nil))

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.isHidden(name) {
		return syscall.EPERM
	}
	if n.fsys.readOnly {
		return syscall.EROFS
	}
	unlock, errno := n.lockOp(ctx, "unlink", n.childPath(name), n.entryScan(name, false))
	if errno != 0 {
		return errno
	}
	defer unlock()
	return n.LoopbackNode.Unlink(ctx, name)
}

var _ = (fs.NodeMknoder)((*node)(nil))

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.isHidden(name) {
		return nil, syscall.EPERM
	}
	if n.fsys.readOnly {
		return nil, syscall.EROFS
	}
	unlock, errno := n.lockOp(ctx, "mknod", n.childPath(name), n.entryScan(name, false))
	if errno != 0 {
		return nil, errno
	}
	defer unlock()
	return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
}

var _ = (fs.NodeSymlinker)((*node)(nil))

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.isHidden(name) {
		return nil, syscall.EPERM
	}
	if n.fsys.readOnly {
		return nil, syscall.EROFS
	}
	unlock, errno := n.lockOp(ctx, "symlink", n.childPath(name), n.entryScan(name, false))
	if errno != 0 {
		return nil, errno
	}
	defer unlock()
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

var _ = (fs.NodeLinker)((*node)(nil))

// Link locks the scan of the existing file and that of the new name
// (both, in sorted order, when they differ).
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.isHidden(name) {
		return nil, syscall.EPERM
	}
	if n.fsys.readOnly {
		return nil, syscall.EROFS
	}
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	targetScan, targetPath := tn.scan()
	path := targetPath + " -> " + n.childPath(name)
	unlock, errno := n.lockOp(ctx, "link", path, targetScan, n.entryScan(name, false))
	if errno != 0 {
		return nil, errno
	}
	defer unlock()
	return n.LoopbackNode.Link(ctx, tn, name, out)
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
	unlock, errno := n.lockOp(ctx, "rename", path, n.entryScan(name, dirLike), np.entryScan(newName, dirLike))
	if errno != 0 {
		return errno
	}
	defer unlock()
	return n.LoopbackNode.Rename(ctx, name, np, newName, flags)
}

// filteredDir is the root's directory handle: the loopback directory
// stream without the names in hide, and with extra (the status view) as
// its first entry. Everything else is forwarded.
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
	if off == extraOff {
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
