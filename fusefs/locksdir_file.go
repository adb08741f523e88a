package fusefs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The files of the status view (see locksdir.go).

type fileKind int

const (
	kindInfo fileKind = iota
	kindStatus
	kindMetrics
)

// statusFile is one file of MOUNTPOINT/.locks.
type statusFile struct {
	fs.Inode
	fsys *fileSystem
	kind fileKind
	scan string // for kindInfo
}

var _ = (fs.NodeOpener)((*statusFile)(nil))

// Open renders the document now and hands it to the handle, which serves
// only that snapshot. Opens for writing: see openForWrite.
func (f *statusFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if isWriteOpen(flags) {
		return f.openForWrite()
	}
	return &snapshot{data: f.fsys.render(f.kind, f.scan, time.Now(), viewerOf(ctx))}, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH, 0
}

// render renders a file of the status view for viewer v (nil: show
// everything), hiding what v may not see (status_viewer.go).
func (fsys *fileSystem) render(kind fileKind, scan string, now time.Time, v *viewer) []byte {
	switch kind {
	case kindStatus:
		list, err := fsys.mgr.List()
		return fsys.renderMountStatus(list, err, now, fsys.redactorFor(v))
	case kindMetrics:
		return renderMetrics(fsys.gatherMetrics())
	}
	st, err := fsys.mgr.Status(scan)
	return renderInfo(st, err, now, fsys.redactorFor(v))
}

var _ = (fs.NodeGetattrer)((*statusFile)(nil))

// Getattr reports size 0 (see locksdir.go) and no handle-specific size:
// go-fuse passes some open handle of the node even to a stat(2) by path.
func (f *statusFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fsys.status.fileAttr(&out.Attr, f.StableAttr().Ino)
	return 0
}

var _ = (fs.NodeStatfser)((*statusFile)(nil))

func (f *statusFile) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return f.fsys.statfs(ctx, out)
}

var (
	_ = (fs.NodeSetattrer)((*statusFile)(nil))
	_ = (fs.NodeSetxattrer)((*statusFile)(nil))
	_ = (fs.NodeRemovexattrer)((*statusFile)(nil))
)

// Setattr (truncate, chmod, chown, utimens) fails: the view is read-only.
func (f *statusFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (f *statusFile) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (f *statusFile) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.EROFS
}

// snapshot is an open file of the status view: the document rendered at
// open, immutable, so concurrent reads need no lock.
type snapshot struct {
	data []byte
}

var _ = (fs.FileReader)((*snapshot)(nil))

func (s *snapshot) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(s.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(s.data)))
	return fuse.ReadResultData(s.data[off:end]), 0
}
