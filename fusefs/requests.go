package fusefs

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FUSE requests counted by opcode, for scanlockfs_fuse_requests_total in
// .locks/metrics: the number of round trips a workload costs, so that
// what the kernel's caches save (or not) can be checked. go-fuse has no
// request hook, so the RawFileSystem between go-fuse's server and its
// node bridge is wrapped. INTERRUPT, DESTROY and NOTIFY_REPLY are
// answered by go-fuse's server without reaching it and are not counted;
// a BATCH_FORGET counts one FORGET per inode it forgets.

// reqOp is a counted opcode.
type reqOp int

const (
	opLookup reqOp = iota
	opForget
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	opCreate
	opTmpfile
	opOpen
	opRead
	opLseek
	opGetlk
	opSetlk
	opSetlkw
	opRelease
	opWrite
	opCopyFileRange
	opIoctl
	opFlush
	opFsync
	opFallocate
	opOpendir
	opReaddir
	opReaddirplus
	opReleasedir
	opFsyncdir
	opStatfs
	opStatx
	opInit
	numReqOps
)

// reqOpNames are the kernel's names of the opcodes, as the label values.
var reqOpNames = [numReqOps]string{
	"LOOKUP", "FORGET", "GETATTR", "SETATTR", "MKNOD", "MKDIR", "UNLINK", "RMDIR",
	"RENAME", "LINK", "SYMLINK", "READLINK", "ACCESS", "GETXATTR", "LISTXATTR",
	"SETXATTR", "REMOVEXATTR", "CREATE", "TMPFILE", "OPEN", "READ", "LSEEK", "GETLK",
	"SETLK", "SETLKW", "RELEASE", "WRITE", "COPY_FILE_RANGE", "IOCTL", "FLUSH", "FSYNC",
	"FALLOCATE", "OPENDIR", "READDIR", "READDIRPLUS", "RELEASEDIR", "FSYNCDIR",
	"STATFS", "STATX", "INIT",
}

// reqCounts counts requests by opcode.
type reqCounts [numReqOps]atomic.Uint64

// snapshot returns the counts by label value.
func (c *reqCounts) snapshot() map[string]uint64 {
	m := make(map[string]uint64, numReqOps)
	for op := range numReqOps {
		m[reqOpNames[op]] = c[op].Load()
	}
	return m
}

// CountRequests returns raw with every request counted by opcode, as a
// scanlockfs mount counts them, and a function returning the counts by
// the kernel's opcode names. The bench's loopback baseline uses it, so
// that both mounts pay the same for counting and count alike.
func CountRequests(raw fuse.RawFileSystem) (fuse.RawFileSystem, func() map[string]uint64) {
	n := new(reqCounts)
	return &countingFS{RawFileSystem: raw, n: n}, n.snapshot
}

// countingFS counts each request, then passes it on.
type countingFS struct {
	fuse.RawFileSystem
	n *reqCounts
}

// count counts one request of op and returns the file system that
// serves it.
func (c *countingFS) count(op reqOp) fuse.RawFileSystem {
	c.n[op].Add(1)
	return c.RawFileSystem
}

func (c *countingFS) Init(s *fuse.Server) {
	c.count(opInit).Init(s)
}

func (c *countingFS) Lookup(x <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	return c.count(opLookup).Lookup(x, h, name, out)
}

func (c *countingFS) Forget(nodeid, nlookup uint64) {
	c.count(opForget).Forget(nodeid, nlookup)
}

func (c *countingFS) GetAttr(x <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	return c.count(opGetattr).GetAttr(x, in, out)
}

func (c *countingFS) SetAttr(x <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return c.count(opSetattr).SetAttr(x, in, out)
}

func (c *countingFS) Mknod(x <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return c.count(opMknod).Mknod(x, in, name, out)
}

func (c *countingFS) Mkdir(x <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return c.count(opMkdir).Mkdir(x, in, name, out)
}

func (c *countingFS) Unlink(x <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return c.count(opUnlink).Unlink(x, h, name)
}

func (c *countingFS) Rmdir(x <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return c.count(opRmdir).Rmdir(x, h, name)
}

func (c *countingFS) Rename(x <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return c.count(opRename).Rename(x, in, oldName, newName)
}

func (c *countingFS) Link(x <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return c.count(opLink).Link(x, in, name, out)
}

func (c *countingFS) Symlink(x <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return c.count(opSymlink).Symlink(x, h, target, name, out)
}

func (c *countingFS) Readlink(x <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	return c.count(opReadlink).Readlink(x, h)
}

func (c *countingFS) Access(x <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	return c.count(opAccess).Access(x, in)
}

func (c *countingFS) GetXAttr(x <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	return c.count(opGetxattr).GetXAttr(x, h, attr, dest)
}

func (c *countingFS) ListXAttr(x <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	return c.count(opListxattr).ListXAttr(x, h, dest)
}

func (c *countingFS) SetXAttr(x <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return c.count(opSetxattr).SetXAttr(x, in, attr, data)
}

func (c *countingFS) RemoveXAttr(x <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return c.count(opRemovexattr).RemoveXAttr(x, h, attr)
}

func (c *countingFS) Create(x <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return c.count(opCreate).Create(x, in, name, out)
}

func (c *countingFS) Tmpfile(x <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return c.count(opTmpfile).Tmpfile(x, in, out)
}

func (c *countingFS) Open(x <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return c.count(opOpen).Open(x, in, out)
}

func (c *countingFS) Read(x <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	return c.count(opRead).Read(x, in, buf)
}

func (c *countingFS) Lseek(x <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	return c.count(opLseek).Lseek(x, in, out)
}

func (c *countingFS) GetLk(x <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	return c.count(opGetlk).GetLk(x, in, out)
}

func (c *countingFS) SetLk(x <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return c.count(opSetlk).SetLk(x, in)
}

func (c *countingFS) SetLkw(x <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return c.count(opSetlkw).SetLkw(x, in)
}

func (c *countingFS) Release(x <-chan struct{}, in *fuse.ReleaseIn) {
	c.count(opRelease).Release(x, in)
}

// Writev is how go-fuse's server passes every WRITE on (Write only after
// Writev answered ENOSYS, which the node bridge never does).
func (c *countingFS) Writev(x <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	return c.count(opWrite).Writev(x, in, data)
}

func (c *countingFS) CopyFileRange(x <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return c.count(opCopyFileRange).CopyFileRange(x, in)
}

func (c *countingFS) Ioctl(x <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	return c.count(opIoctl).Ioctl(x, in, inbuf, out, outbuf)
}

func (c *countingFS) Flush(x <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return c.count(opFlush).Flush(x, in)
}

func (c *countingFS) Fsync(x <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return c.count(opFsync).Fsync(x, in)
}

func (c *countingFS) FsyncDir(x <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return c.count(opFsyncdir).FsyncDir(x, in)
}

func (c *countingFS) Fallocate(x <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return c.count(opFallocate).Fallocate(x, in)
}

func (c *countingFS) OpenDir(x <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return c.count(opOpendir).OpenDir(x, in, out)
}

func (c *countingFS) ReadDir(x <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return c.count(opReaddir).ReadDir(x, in, out)
}

func (c *countingFS) ReadDirPlus(x <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return c.count(opReaddirplus).ReadDirPlus(x, in, out)
}

func (c *countingFS) ReleaseDir(in *fuse.ReleaseIn) {
	c.count(opReleasedir).ReleaseDir(in)
}

func (c *countingFS) StatFs(x <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	return c.count(opStatfs).StatFs(x, h, out)
}

func (c *countingFS) Statx(x <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	return c.count(opStatx).Statx(x, in, out)
}
