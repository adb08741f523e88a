package fusefs

import (
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// The backing file system is reached only through descriptors.
//
// The kernel checks a caller's permission on the FUSE inode; the daemon,
// running as root, then acts on SOURCE — often after waiting for a scan
// lock, which gives anyone who may write a directory of SOURCE all the
// time needed to replace a file or a directory by a symlink. So no path
// is followed through a symlink: every backing object is opened from
// SOURCE's path (its symlinks resolved at the mount) with no symlink
// allowed in any component (openat2 with RESOLVE_NO_SYMLINKS, in pieces
// for paths longer than PATH_MAX, or a walk with O_NOFOLLOW on kernels
// without openat2); it is resolved after the lock is granted; and what is
// found is checked to be the inode the kernel checked (same inode number
// and type as the node), else the request fails and nothing is done.
// Changes of a node's own attributes go through an O_PATH descriptor of
// the checked inode (fchownat with AT_EMPTY_PATH, or /proc/self/fd/N), so
// that nothing can be swapped in between the check and the change.

// backing is SOURCE. Every operation resolves SOURCE's path again, as the
// lock manager reaches the lock directory by path: if SOURCE goes away or
// something is mounted over it, data and locks both follow the path. The
// path is SOURCE with the symlinks of the administrator's configuration
// resolved once, at the mount, so that the whole path can be resolved
// with no symlink allowed anywhere, in one openat2 call when it is short
// enough.
type backing struct {
	path string // SOURCE, absolute, without symlinks
	dev  uint64 // SOURCE's device at the mount, for inode numbers (ino)
}

// newBacking resolves SOURCE's path and notes its device.
func newBacking(src string) (*backing, error) {
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		return nil, &fsError{op: "resolve", path: src, err: err}
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return nil, &fsError{op: "stat", path: real, err: err}
	}
	return &backing{path: real, dev: st.Dev}, nil
}

// fsError is a failed system call on SOURCE, with the path it names.
type fsError struct {
	op, path string
	err      error
}

func (e *fsError) Error() string { return e.op + " " + e.path + ": " + e.err.Error() }
func (e *fsError) Unwrap() error { return e.err }

// resolveFlags: nothing outside the starting directory, no symlink of any
// kind anywhere in the path.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// maxResolve is the longest relative path given to one openat2 call
// (PATH_MAX counts the terminating NUL). Longer paths, which the mount
// allows because the kernel sends one name at a time, are resolved in
// pieces, each relative to the directory the previous one reached.
var maxResolve = unix.PathMax - 1 // a variable for tests

// openat2Works is cleared when openat2(2) is missing (Linux < 5.6).
var openat2Works atomic.Bool

func init() { openat2Works.Store(true) }

// open opens rel (relative to SOURCE, "" for SOURCE itself) with flags,
// following no symlink in any component. A trailing symlink is opened
// itself with O_PATH|O_NOFOLLOW, and fails with ELOOP otherwise.
func (b *backing) open(rel string, flags int, mode uint32) (int, error) {
	full := b.path
	if rel != "" {
		full += "/" + rel
	}
	if len(full) <= maxResolve && openat2Works.Load() {
		// rel is made of names the kernel sent (never "..", never
		// containing '/'): the path stays beneath SOURCE.
		fd, err := openat2(unix.AT_FDCWD, full, flags, mode, unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
		if err != unix.ENOSYS {
			return fd, err
		}
	}
	root, err := openNoSymlinks(unix.AT_FDCWD, b.path, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	if rel == "" {
		rel = "."
	}
	dirfd, own := root, false
	for len(rel) > maxResolve {
		i := strings.LastIndexByte(rel[:maxResolve], '/')
		if i <= 0 {
			return -1, syscall.ENAMETOOLONG
		}
		fd, err := openNoSymlinks(dirfd, rel[:i], unix.O_PATH|unix.O_DIRECTORY, 0)
		if own {
			unix.Close(dirfd)
		}
		if err != nil {
			return -1, err
		}
		dirfd, own = fd, true
		rel = rel[i+1:]
	}
	fd, err := openNoSymlinks(dirfd, rel, flags, mode)
	if own {
		unix.Close(dirfd)
	}
	return fd, err
}

// openNoSymlinks opens rel relative to dirfd (or the absolute path rel)
// with no symlink followed.
func openNoSymlinks(dirfd int, rel string, flags int, mode uint32) (int, error) {
	if openat2Works.Load() {
		resolve := uint64(resolveFlags)
		if strings.HasPrefix(rel, "/") {
			resolve &^= unix.RESOLVE_BENEATH
		}
		fd, err := openat2(dirfd, rel, flags, mode, resolve)
		if err != unix.ENOSYS {
			return fd, err
		}
	}
	return walkNoSymlinks(dirfd, rel, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, mode)
}

// openat2 is openat2(2) with O_CLOEXEC|O_NOFOLLOW added. It clears
// openat2Works and returns ENOSYS where the call is missing.
func openat2(dirfd int, path string, flags int, mode uint32, resolve uint64) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Resolve: resolve}
	if flags&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
		how.Mode = uint64(mode)
	}
	for {
		fd, err := unix.Openat2(dirfd, path, &how)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			// A concurrent rename made the kernel unsure that the walk
			// stayed beneath dirfd, or a cached walk failed: the kernel
			// asks to try again. Rare; give up after a few.
			for range 2 {
				if fd, err = unix.Openat2(dirfd, path, &how); err != unix.EAGAIN {
					return fd, err
				}
			}
			return fd, err
		case unix.ENOSYS:
			openat2Works.Store(false)
		}
		return fd, err
	}
}

// walkNoSymlinks is openNoSymlinks without openat2: one openat per
// component, each with O_NOFOLLOW (a symlink among the directories fails
// with ENOTDIR or ELOOP).
func walkNoSymlinks(dirfd int, rel string, flags int, mode uint32) (int, error) {
	if strings.HasPrefix(rel, "/") {
		root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		defer unix.Close(root)
		dirfd, rel = root, strings.TrimLeft(rel, "/")
	}
	comps := strings.Split(rel, "/")
	cur, own := dirfd, false
	defer func() {
		if own {
			unix.Close(cur)
		}
	}()
	for i, c := range comps {
		if c == "" || c == ".." || (c == "." && len(comps) > 1) {
			return -1, syscall.EINVAL // node paths never contain these
		}
		if i == len(comps)-1 {
			return unix.Openat(cur, c, flags, mode)
		}
		fd, err := unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		if own {
			unix.Close(cur)
		}
		cur, own = fd, true
	}
	return -1, syscall.EINVAL
}

// ino is the inode number go-fuse's loopback gives a backing inode
// (fs.LoopbackRoot's idFromStat): the backing number, with the device
// mixed in for file systems mounted below SOURCE.
func (b *backing) ino(st *syscall.Stat_t) uint64 {
	dev := uint64(st.Dev)
	swapped := (dev << 32) | (dev >> 32)
	swappedRoot := (b.dev << 32) | (b.dev >> 32)
	return (swapped ^ swappedRoot) ^ st.Ino
}

// stableAttr is the identity of a backing inode as a go-fuse node.
func (b *backing) stableAttr(st *syscall.Stat_t, btime unix.StatxTimestamp) fs.StableAttr {
	gen := uint64(noBirthGen)
	if btime.Sec != 0 || btime.Nsec != 0 {
		gen = uint64(btime.Sec)*1e9 + uint64(btime.Nsec)
	}
	return fs.StableAttr{Mode: st.Mode & unix.S_IFMT, Ino: b.ino(st), Gen: gen}
}

// noBirthGen is the generation of inodes whose file system reports no
// birth time.
const noBirthGen = 1

// statx stats name in dirfd ("" with AT_EMPTY_PATH: dirfd itself), without
// following a symlink, and returns the stat and the birth time.
func statx(dirfd int, name string, flags int) (syscall.Stat_t, unix.StatxTimestamp, error) {
	var x unix.Statx_t
	var st syscall.Stat_t
	err := unix.Statx(dirfd, name, flags|unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_SYNC_AS_STAT,
		unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x)
	if err != nil {
		return st, unix.StatxTimestamp{}, err
	}
	st.Dev = unix.Mkdev(x.Dev_major, x.Dev_minor)
	st.Ino = x.Ino
	st.Nlink = uint64(x.Nlink)
	st.Mode = uint32(x.Mode)
	st.Uid, st.Gid = x.Uid, x.Gid
	st.Rdev = unix.Mkdev(x.Rdev_major, x.Rdev_minor)
	st.Size = int64(x.Size)
	st.Blksize = int64(x.Blksize)
	st.Blocks = int64(x.Blocks)
	st.Atim = syscall.Timespec{Sec: x.Atime.Sec, Nsec: int64(x.Atime.Nsec)}
	st.Mtim = syscall.Timespec{Sec: x.Mtime.Sec, Nsec: int64(x.Mtime.Nsec)}
	st.Ctim = syscall.Timespec{Sec: x.Ctime.Sec, Nsec: int64(x.Ctime.Nsec)}
	var btime unix.StatxTimestamp
	if x.Mask&unix.STATX_BTIME != 0 {
		btime = x.Btime
	}
	return st, btime, nil
}

// isSame reports whether st is the inode behind node attributes want: the
// check that what the daemon acts on is what the kernel checked.
func (b *backing) isSame(st *syscall.Stat_t, want fs.StableAttr) bool {
	return st.Mode&unix.S_IFMT == want.Mode&unix.S_IFMT && b.ino(st) == want.Ino
}

// procPath names the object behind descriptor fd (an O_PATH descriptor of
// a checked inode) for the calls that have no descriptor form for O_PATH
// descriptors: chmod, truncate, utimensat, the xattr calls. The kernel
// resolves it to that very inode, whatever its name is now.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
