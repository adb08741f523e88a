package fusefs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"scanlockfs/lockmgr"
	"scanlockfs/scanstatus"
)

// The status view: MOUNTPOINT/.locks is a virtual directory
// that takes the place of the real lock directory at the root.
//
//	.locks/<scan_id>.info  the scan's holders and waiters (JSON, scanstatus.InfoDoc)
//	.locks/status.json     every scan with a holder or waiter (scanstatus.MountDoc)
//	.locks/metrics         counters in Prometheus text format (status_metrics.go)
//
// Listing .locks shows the .info file of every scan with a holder or a
// waiter right now; the .info file of any existing scan can be opened.
//
// Content is rendered when a file is opened, into the file handle: one
// consistent snapshot per open, served with FOPEN_DIRECT_IO so that the
// kernel never serves cached pages of an older snapshot. The files
// report size 0, as /proc files do: with direct I/O the kernel passes
// every read(2) to the daemon whatever the size, so cat, grep, less, jq
// and Python read up to the end of the snapshot. A size from another
// render would be wrong by the time of the read, and tools that trust a
// non-zero size act on it: wc -c reports it without reading, tail and cp
// stop there (tests/status_view_test.go); size 0 makes them read, as
// they do for /proc. (Only asynchronous O_DIRECT reads, io_uring or aio, stop at
// the size; no status tool uses them.)
//
// Nothing here takes a scan lock or waits for one: rendering reads
// lockmgr's state under its short internal mutexes, /proc/locks and
// SOURCE's .info files. Every change (create, write, truncate, chmod,
// unlink, rename, mkdir, symlink, link, setxattr) fails with EROFS, but
// those flock(1) and plantdb make with the lock files and plantdb's files
// (locksdir_lock.go, locksdir_lock_plantdb.go), which change nothing.

const (
	statusDirName   = scanstatus.ViewDir
	statusJSONName  = scanstatus.MountDocName
	metricsName     = "metrics"
	infoSuffix      = ".info"
	statusDirMode   = 0o555
	statusFileMode  = 0o444
	statusBlockSize = 4096
)

// Inode numbers of the virtual nodes. Loopback inodes carry the backing
// file system's inode numbers (fs.LoopbackRoot's idFromStat, which only
// mixes in the device number for other file systems mounted below
// SOURCE), and go-fuse numbers nodes without one from 1<<63 up. The top
// 2^40 numbers are used by neither on ordinary file systems, and the
// generation statusGen tells our nodes apart even from a backing inode
// in that range: go-fuse identifies a node by mode, number and
// generation, so a clash would otherwise merge two nodes.
const (
	statusInoBase = 0xFFFF_FF00_0000_0000
	statusDirIno  = statusInoBase + 1
	statusJSONIno = statusInoBase + 2
	metricsIno    = statusInoBase + 3
	firstInfoIno  = statusInoBase + 16
	statusGen     = 0x5ca7_10c5
)

// statusView is the per-mount state of the status view.
type statusView struct {
	source, mountpoint string
	started            time.Time
	uid, gid           uint32

	mu      sync.Mutex // guards the fields below; never held while waiting
	dir     *fs.Inode
	inos    map[string]uint64 // scan id -> inode number of its .info file
	nextIno uint64
}

func newStatusView(source, mountpoint string) *statusView {
	return &statusView{source: source, mountpoint: mountpoint, started: time.Now(),
		uid: uint32(os.Getuid()), gid: uint32(os.Getgid()),
		inos: map[string]uint64{}, nextIno: firstInfoIno}
}

// infoIno returns the inode number of scan's .info file: allocated on
// first use and kept for the life of the mount, so that it is stable
// and unique (a hash could collide, and go-fuse would then return one
// scan's node for the other's name). The table holds one entry per scan
// that was looked up or listed, which are scans that exist or are locked.
func (v *statusView) infoIno(scan string) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	ino, ok := v.inos[scan]
	if !ok {
		ino = v.nextIno
		v.nextIno++
		v.inos[scan] = ino
	}
	return ino
}

// lookupStatusDir returns the .locks directory node, creating it on the
// first lookup (go-fuse can create nodes only once mounted). It is
// persistent: it stays in the tree when the kernel forgets it.
func (fsys *fileSystem) lookupStatusDir(ctx context.Context, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	v := fsys.status
	v.mu.Lock()
	if v.dir == nil {
		v.dir = fsys.root.NewPersistentInode(ctx, &statusDir{fsys: fsys},
			fs.StableAttr{Mode: syscall.S_IFDIR, Ino: statusDirIno, Gen: statusGen})
	}
	dir := v.dir
	v.mu.Unlock()
	v.dirAttr(&out.Attr)
	return dir, 0
}

// statusDirEntry is the root listing's entry for .locks.
func statusDirEntry() fuse.DirEntry {
	return fuse.DirEntry{Name: statusDirName, Mode: syscall.S_IFDIR, Ino: statusDirIno}
}

func (v *statusView) dirAttr(a *fuse.Attr) {
	v.attr(a, syscall.S_IFDIR|statusDirMode, statusDirIno)
	a.Nlink = 2
}

func (v *statusView) fileAttr(a *fuse.Attr, ino uint64) {
	mode := uint32(statusFileMode)
	if writableIno(ino) {
		mode = lockFileMode // locksdir_lock_plantdb.go
	}
	v.attr(a, syscall.S_IFREG|mode, ino)
	a.Nlink = 1
}

func (v *statusView) attr(a *fuse.Attr, mode uint32, ino uint64) {
	now := time.Now()
	a.Ino, a.Mode, a.Size, a.Blocks, a.Blksize = ino, mode, 0, 0, statusBlockSize
	a.Uid, a.Gid = v.uid, v.gid
	a.SetTimes(&now, &now, &now)
}

// statusDir is MOUNTPOINT/.locks.
type statusDir struct {
	fs.Inode
	fsys *fileSystem
}

var _ = (fs.NodeLookuper)((*statusDir)(nil))

// Lookup finds status.json, metrics, and <scan>.info for a valid scan id
// whose scan directory exists or which is locked or awaited (a scan
// being created or removed elsewhere). Other names do not exist.
func (d *statusDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	v := d.fsys.status
	f := &statusFile{fsys: d.fsys}
	var ino uint64
	switch name {
	case statusJSONName:
		f.kind, ino = kindStatus, statusJSONIno
	case metricsName:
		f.kind, ino = kindMetrics, metricsIno
	default:
		if ch, ok := d.lookupWritable(ctx, name, out); ok {
			return ch, 0
		}
		scan, ok := strings.CutSuffix(name, infoSuffix)
		if !ok || lockmgr.ValidateScanID(scan) != nil || !d.fsys.scanKnown(scan) {
			return nil, syscall.ENOENT
		}
		f.kind, f.scan, ino = kindInfo, scan, v.infoIno(scan)
	}
	v.fileAttr(&out.Attr, ino)
	return d.child(ctx, name, f, ino), 0
}

// scanKnown reports whether scan is a scan directory of SOURCE, or is
// locked or awaited right now.
func (fsys *fileSystem) scanKnown(scan string) bool {
	var st syscall.Stat_t
	if syscall.Lstat(filepath.Join(fsys.status.source, scan), &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return true
	}
	s, err := fsys.mgr.Status(scan)
	return err == nil && s.Active()
}

var _ = (fs.NodeReaddirer)((*statusDir)(nil))

// Readdir lists status.json, metrics and the .info file of every scan
// that has a holder or a waiter now (lockmgr.Manager.List: this mount's
// and those of other processes in /proc/locks).
func (d *statusDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	v := d.fsys.status
	entries := []fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: statusDirIno},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: d.fsys.root.StableAttr().Ino},
		{Name: statusJSONName, Mode: syscall.S_IFREG, Ino: statusJSONIno},
		{Name: metricsName, Mode: syscall.S_IFREG, Ino: metricsIno},
	}
	list, err := d.fsys.mgr.List()
	if err != nil {
		d.fsys.log.WithError(err).Warn("listing locked scans for .locks")
	}
	for _, st := range list {
		entries = append(entries, fuse.DirEntry{Name: st.ScanID + infoSuffix, Mode: syscall.S_IFREG, Ino: v.infoIno(st.ScanID)})
	}
	return fs.NewListDirStream(entries), 0
}

var _ = (fs.NodeGetattrer)((*statusDir)(nil))

func (d *statusDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.status.dirAttr(&out.Attr)
	return 0
}

var _ = (fs.NodeStatfser)((*statusDir)(nil))

func (d *statusDir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return d.fsys.statfs(ctx, out)
}

// statfs answers for the virtual nodes as the root does, so that df
// shows the same file system everywhere in the mount.
func (fsys *fileSystem) statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if s, ok := fsys.root.Operations().(fs.NodeStatfser); ok {
		return s.Statfs(ctx, out)
	}
	return 0
}

// The status view is read-only: every change fails with EROFS, with
// the exceptions api_check.go lists.

func (d *statusDir) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (d *statusDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if ch, fh, fl, errno, ok := d.createWritable(ctx, name, flags, out); ok {
		return ch, fh, fl, errno
	}
	return nil, nil, 0, syscall.EROFS
}

func (d *statusDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (d *statusDir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (d *statusDir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (d *statusDir) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (d *statusDir) Unlink(ctx context.Context, name string) syscall.Errno {
	if plantdbUnlinks(name) {
		return 0
	}
	return syscall.EROFS
}

func (d *statusDir) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

func (d *statusDir) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (d *statusDir) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (d *statusDir) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (d *statusDir) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.EROFS
}
