package fusefs

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"scanlockfs/lockmgr"
)

// plantdb's files in .locks. An unmodified plantdb ScanLockManager
// pointed at the mount writes and removes these besides the lock files
// (locksdir_lock.go); each does what plantdb needs and nothing on
// SOURCE:
//
//	lock_manager.log  its log file ('w' or 'a'): every line written goes
//	                  to the daemon's log (level info, component=plantdb,
//	                  with the writer's pid and user); it reads empty.
//	<scan>.info       its lock record: a write open succeeds and what is
//	                  written is dropped; reading still gives the status
//	                  view's document, which shows plantdb's hold anyway.
//	unlink            of <scan>.lock, <scan>.info and lock_manager.log
//	                  succeeds and changes nothing (the name stays).
//
// These files are mode 0666 so that with allow_other (default_permissions)
// any user's plantdb can open them; locking still needs permission on
// the scan (mayLock). The .lock files are not listed: plantdb's stale
// lock clean-up, which lists .locks, has nothing to clean through the
// mount (lockmgr cleans SOURCE's lock directory itself).

const (
	plantdbLogName = "lock_manager.log"
	plantdbLogIno  = statusInoBase + 4
	// maxLogLine bounds a line of plantdb's log kept in the daemon
	// before it is logged (longer ones are logged in pieces).
	maxLogLine = 4096
)

// writableIno reports whether ino is a file of .locks that programs may
// open for writing (the lock files, plantdb's .info records and log).
func writableIno(ino uint64) bool { return ino >= firstInfoIno || ino == plantdbLogIno }

// lookupWritable finds the names of .locks that exist for writing:
// <scan>.lock for every valid scan id, and lock_manager.log. ok is false
// for any other name. A lock file's inode number stays allocated for the
// life of the mount, as .info files' do: one entry per name looked up.
func (d *statusDir) lookupWritable(ctx context.Context, name string, out *fuse.EntryOut) (ch *fs.Inode, ok bool) {
	v := d.fsys.status
	var ops fs.InodeEmbedder
	var ino uint64
	if name == plantdbLogName {
		ops, ino = &plantdbLog{fsys: d.fsys}, plantdbLogIno
	} else if scan, isLock := strings.CutSuffix(name, lockSuffix); isLock && lockmgr.ValidateScanID(scan) == nil {
		// "/" keeps the key apart from the scan ids of .info files.
		ops, ino = &lockFile{fsys: d.fsys, scan: scan}, v.infoIno("/"+name)
	} else {
		return nil, false
	}
	v.fileAttr(&out.Attr, ino)
	return d.child(ctx, name, ops, ino), true
}

// child returns d's node for name with inode number ino: the one the
// kernel knows already, or a new one with ops.
func (d *statusDir) child(ctx context.Context, name string, ops fs.InodeEmbedder, ino uint64) *fs.Inode {
	if ch := d.GetChild(name); ch != nil && ch.StableAttr().Ino == ino {
		return ch
	}
	return d.NewInode(ctx, ops, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino, Gen: statusGen})
}

// createWritable is CREATE of a name lookupWritable finds (the kernel
// sends it only if a lookup said ENOENT, so only root racing its own
// lookup gets here): it opens that file. ok is false for other names.
func (d *statusDir) createWritable(ctx context.Context, name string, flags uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno, bool) {
	ch, ok := d.lookupWritable(ctx, name, out)
	if !ok {
		return nil, nil, 0, 0, false
	}
	op, ok := ch.Operations().(fs.NodeOpener)
	if !ok {
		return nil, nil, 0, syscall.EIO, true
	}
	fh, fl, errno := op.Open(ctx, flags)
	if errno != 0 {
		return nil, nil, 0, errno, true
	}
	return ch, fh, fl, 0, true
}

// plantdbUnlinks reports whether name is one plantdb unlinks in .locks,
// which succeeds and changes nothing.
func plantdbUnlinks(name string) bool {
	if name == plantdbLogName {
		return true
	}
	for _, suffix := range []string{lockSuffix, infoSuffix} {
		if scan, ok := strings.CutSuffix(name, suffix); ok && lockmgr.ValidateScanID(scan) == nil {
			return true
		}
	}
	return false
}

// plantdbLog is .locks/lock_manager.log.
type plantdbLog struct {
	fs.Inode
	fsys *fileSystem
}

var (
	_ = (fs.NodeOpener)((*plantdbLog)(nil))
	_ = (fs.NodeGetattrer)((*plantdbLog)(nil))
	_ = (fs.NodeSetattrer)((*plantdbLog)(nil))
)

// Open gives a handle whose lines go to the daemon's log.
func (p *plantdbLog) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	o := callerOwner(ctx, "")
	return &sink{log: p.fsys.log.WithFields(logrus.Fields{"component": "plantdb", "pid": o.PID, "user": o.User})}, fuse.FOPEN_DIRECT_IO, 0
}

func (p *plantdbLog) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	p.fsys.status.fileAttr(&out.Attr, plantdbLogIno)
	return 0
}

func (p *plantdbLog) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return p.fsys.status.setWritableAttr(in, out, plantdbLogIno)
}

// openForWrite is the open of a status file for writing: plantdb's
// record in <scan>.info is accepted and dropped; status.json and metrics
// stay read-only.
func (f *statusFile) openForWrite() (fs.FileHandle, uint32, syscall.Errno) {
	if f.kind != kindInfo {
		return nil, 0, syscall.EROFS
	}
	return &sink{}, fuse.FOPEN_DIRECT_IO, 0
}

// sink is a handle that accepts every write: it logs the lines written
// to log, or drops them if log is nil. It reads empty.
type sink struct {
	log logrus.FieldLogger

	mu  sync.Mutex // guards buf
	buf []byte     // the last line, not complete yet
}

var (
	_ = (fs.FileReader)((*sink)(nil))
	_ = (fs.FileWriter)((*sink)(nil))
	_ = (fs.FileReleaser)((*sink)(nil))
)

func (s *sink) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultData(nil), 0
}

func (s *sink) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if s.log == nil {
		return uint32(len(data)), 0
	}
	s.mu.Lock()
	s.buf = append(s.buf, data...)
	var lines []string
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 && len(s.buf) <= maxLogLine {
			break
		}
		if i < 0 || i > maxLogLine {
			i = maxLogLine
		}
		lines = append(lines, string(s.buf[:i]))
		s.buf = bytes.TrimPrefix(s.buf[i:], []byte("\n"))
	}
	s.mu.Unlock()
	for _, l := range lines {
		s.log.Info(l)
	}
	return uint32(len(data)), 0
}

// Release logs a last line that did not end with a newline.
func (s *sink) Release(ctx context.Context) syscall.Errno {
	s.mu.Lock()
	rest := s.buf
	s.buf = nil
	s.mu.Unlock()
	if s.log != nil && len(rest) > 0 {
		s.log.Info(string(rest))
	}
	return 0
}
