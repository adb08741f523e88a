package lockmgr

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The lock directory is shared: every user of the scan tree may create,
// replace and remove files in it (plantdb needs that), while the daemon
// that reads and removes them usually runs as root. So every access to
// it goes through lockDir:
//
//   - the directory is opened once, with O_NOFOLLOW, and used through
//     that descriptor (openat, fstatat, unlinkat, renameat): a symbolic
//     link planted as the lock directory, or swapped in later, is never
//     followed, and nothing is created or removed through it;
//   - a file is first opened with O_PATH|O_NOFOLLOW, which opens nothing
//     for real (no FIFO blocks, no device acts), its type and link count
//     are checked with fstat, and only a regular file with one link is
//     then reopened for real through /proc/self/fd;
//   - files are read with a size limit (maxInfoSize).

// maxInfoSize bounds what is read of an .info file: plantdb's are about
// 150 bytes, ours a few hundred.
const maxInfoSize = 64 << 10

// lockDir is the lock directory, held by an O_PATH descriptor opened
// without following a symbolic link.
type lockDir struct {
	path string
	base string // the last element of path, "" if path has none (it is "/")

	mu     sync.RWMutex // guards the fields below; write-held only to change them
	fd     int          // -1 while the directory does not exist (WithReadOnly)
	id     fileID
	closed bool
	// parentFD is path's parent directory, through which fd was opened
	// (O_PATH, -1 if it could not be opened): the check after a flock
	// looks the lock file up as base/S.lock relative to it (nameStat).
	parentFD int
	fullAt   atomic.Int64 // when nameStat last walked the whole path (UnixNano)
}

// openLockDir opens the lock directory at path. A missing directory is
// not an error (a read-only manager may find none); a symbolic link or
// anything but a directory is.
func openLockDir(path string) (*lockDir, error) {
	d := &lockDir{path: path, fd: -1, parentFD: -1}
	if b := filepath.Base(path); b != "/" && b != "." && b != ".." {
		d.base = b
	}
	if err := d.refresh(); err != nil {
		return nil, err
	}
	return d, nil
}

// refresh makes the descriptor name the directory that path names now:
// the lock directory may have been removed and created again (or moved
// away and replaced) while the manager runs, and other processes use
// whatever the path names. A missing directory leaves the old descriptor
// in place: operations through it then fail with ENOENT. It costs one
// lstat when nothing changed; it runs on the way to opening a lock file,
// not on the path of a cached one.
func (d *lockDir) refresh() error {
	var st unix.Stat_t
	err := unix.Lstat(d.path, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("%w: lock directory %s: %w", ErrLockFile, d.path, err)
	}
	if err := checkLockDirStat(d.path, &st); err != nil {
		return err
	}
	id := fileID{dev: st.Dev, ino: st.Ino}
	d.mu.RLock()
	same := (d.fd >= 0 && d.id == id) || d.closed
	d.mu.RUnlock()
	if same {
		return nil
	}
	pfd, fd, err := d.openDir()
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return symlinkDirError(d.path)
		}
		return fmt.Errorf("%w: lock directory %s: %w", ErrLockFile, d.path, err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		closeFDs(pfd, fd)
		return fmt.Errorf("%w: lock directory %s: %w", ErrLockFile, d.path, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		closeFDs(pfd, fd)
		return nil
	}
	closeFDs(d.parentFD, d.fd)
	d.parentFD, d.fd, d.id = pfd, fd, fileID{dev: st.Dev, ino: st.Ino}
	return nil
}

// openDir opens the lock directory's parent and, through it, the lock
// directory itself without following a symbolic link (both O_PATH). The
// parent is -1 if it cannot be opened: then the directory is opened by
// its path, and nameStat walks the whole path.
func (d *lockDir) openDir() (pfd, fd int, err error) {
	pfd = -1
	if d.base != "" {
		pfd, err = unix.Open(filepath.Dir(d.path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			pfd = -1
		}
	}
	if pfd >= 0 {
		fd, err = unix.Openat(pfd, d.base, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	} else {
		fd, err = unix.Open(d.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		closeFDs(pfd)
		return -1, -1, err
	}
	return pfd, fd, nil
}

// closeFDs closes the descriptors that are not -1.
func closeFDs(fds ...int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// fullPathEvery is how often nameStat walks the whole path anyway.
var fullPathEvery = time.Second

// nameStat puts in st the status of what a file of the lock directory is
// named now, without following a symbolic link in the last element: rel
// is its name relative to the lock directory's parent (relName), path
// its whole path. It looks rel up from the parent's descriptor: one short
// lookup that still goes through the lock directory's entry in its
// parent, so that a lock directory removed, renamed or replaced since it
// was opened is seen not to name the file any more (a symbolic link
// swapped in for it is followed, as in the whole path; refresh then
// refuses it). Once every fullPathEvery, and without the parent's
// descriptor, it walks the whole path instead, which also notices a
// replaced ancestor of the lock directory (the scan root moved away and
// another put in its place).
func (d *lockDir) nameStat(rel, path string, st *unix.Stat_t) error {
	now := time.Now().UnixNano()
	d.mu.RLock()
	pfd := d.parentFD
	if pfd >= 0 && now-d.fullAt.Load() < int64(fullPathEvery) {
		err := unix.Fstatat(pfd, rel, st, unix.AT_SYMLINK_NOFOLLOW)
		d.mu.RUnlock()
		return err
	}
	d.mu.RUnlock()
	d.fullAt.Store(now)
	return unix.Lstat(path, st)
}

// relName is the name of a file of the lock directory relative to its
// parent, for nameStat.
func (d *lockDir) relName(name string) string { return d.base + "/" + name }

// checkLockDirStat refuses a lock directory that is a symbolic link or
// not a directory.
func checkLockDirStat(path string, st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return nil
	case unix.S_IFLNK:
		return symlinkDirError(path)
	}
	return fmt.Errorf("%w: %s is not a directory but %s (move it away so the lock directory can be created)", ErrLockFile, path, kindOf(st.Mode))
}

func symlinkDirError(path string) error {
	return fmt.Errorf("%w: lock directory %s is a symbolic link, which scanlockfs never follows "+
		"(whoever can write the scan root could point root's clean-up at any directory): replace it with a real directory "+
		"(rm %s; mkdir -m 2775 %s; chgrp GROUP %s), or give the real directory with --lock-dir: %w",
		ErrLockFile, path, path, path, path, unix.ELOOP)
}

// close closes the descriptor. Later operations fail with ENOENT.
func (d *lockDir) close() {
	d.mu.Lock()
	closeFDs(d.parentFD, d.fd)
	d.parentFD, d.fd = -1, -1
	d.closed = true
	d.mu.Unlock()
}

// use runs f with the directory's descriptor, which stays valid while f
// runs.
func (d *lockDir) use(f func(dfd int) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.fd < 0 {
		return &os.PathError{Op: "open", Path: d.path, Err: unix.ENOENT}
	}
	return f(d.fd)
}

// badFileError says why a file of the lock directory is not used: its
// kind, or its links. It unwraps to the errno that fits best.
type badFileError struct {
	what  string // "is a FIFO (named pipe)"
	errno unix.Errno
}

func (e *badFileError) Error() string { return e.what }
func (e *badFileError) Unwrap() error { return e.errno }

// kindOf names the type of a file from its mode.
func kindOf(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a FIFO (named pipe)"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "a file of unknown type"
}

// checkFile accepts a regular file with at most one link (none: it was
// removed since it was opened, which the callers' path checks handle).
func checkFile(st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return &badFileError{"is a directory", unix.EISDIR}
	case unix.S_IFLNK:
		return &badFileError{"is a symbolic link", unix.ELOOP}
	default:
		return &badFileError{"is " + kindOf(st.Mode) + ", not a regular file", unix.EINVAL}
	}
	if st.Nlink > 1 {
		return &badFileError{"has " + strconv.FormatUint(uint64(st.Nlink), 10) +
			" hard links (a hard link makes two names one lock)", unix.EMLINK}
	}
	return nil
}

// openFile opens name in the directory with flags (O_RDONLY or O_RDWR,
// without O_CREAT), after checking with O_PATH and fstat that it is a
// regular file with one link: nothing else is opened for real. With
// create, a missing file is created (exclusively, with perm). With
// readOnlyFallback, a file that may not be opened for writing is opened
// read-only. It returns the descriptor and the file's status.
func (d *lockDir) openFile(name string, flags int, create bool, perm uint32, readOnlyFallback bool) (fd int, st unix.Stat_t, err error) {
	err = d.use(func(dfd int) error {
		for {
			pfd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.ENOENT) && create {
				// A new file is ours and regular: no check needed.
				fd, err = unix.Openat(dfd, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
				if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EINTR) {
					continue // created by somebody else meanwhile: check it
				}
				if err != nil {
					return err
				}
				if err := unix.Fstat(fd, &st); err != nil {
					unix.Close(fd)
					return err
				}
				return nil
			}
			if err != nil {
				return err
			}
			err = unix.Fstat(pfd, &st)
			if err == nil {
				err = checkFile(&st)
			}
			if err == nil {
				fd, err = reopen(dfd, pfd, name, flags, readOnlyFallback, &st)
			}
			unix.Close(pfd)
			return err
		}
	})
	if err != nil {
		return -1, st, err
	}
	return fd, st, nil
}

// reopen opens for real the file that the O_PATH descriptor pfd, already
// checked, refers to: through /proc/self/fd, which names that very inode
// whatever happened to the name since.
func reopen(dfd, pfd int, name string, flags int, readOnlyFallback bool, st *unix.Stat_t) (int, error) {
	proc := "/proc/self/fd/" + strconv.Itoa(pfd)
	open := func(flags int) (int, error) {
		for {
			fd, err := unix.Open(proc, flags|unix.O_CLOEXEC, 0)
			if errors.Is(err, unix.ENOENT) {
				// No /proc: open the name again, without following or
				// blocking, and make sure it is still the file checked.
				fd, err = unix.Openat(dfd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
				if err == nil {
					var st2 unix.Stat_t
					if err = unix.Fstat(fd, &st2); err == nil && (st2.Dev != st.Dev || st2.Ino != st.Ino) {
						err = unix.EAGAIN
					}
					if err != nil {
						unix.Close(fd)
						return -1, err
					}
				}
			}
			if !errors.Is(err, unix.EINTR) {
				return fd, err
			}
		}
	}
	fd, err := open(flags)
	if readOnlyFallback && flags&unix.O_ACCMODE != unix.O_RDONLY && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS)) {
		fd, err = open(flags&^unix.O_ACCMODE | unix.O_RDONLY)
	}
	return fd, err
}

// readFile reads name, a regular file with one link of at most
// maxInfoSize bytes. It returns the content and the file's status.
func (d *lockDir) readFile(name string) ([]byte, unix.Stat_t, error) {
	fd, st, err := d.openFile(name, unix.O_RDONLY, false, 0, false)
	if err != nil {
		return nil, st, err
	}
	f := os.NewFile(uintptr(fd), d.path+"/"+name)
	defer f.Close()
	if st.Size > maxInfoSize {
		return nil, st, tooBig(st.Size)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxInfoSize+1))
	if err != nil {
		return nil, st, err
	}
	if len(data) > maxInfoSize {
		return nil, st, tooBig(int64(len(data)))
	}
	return data, st, nil
}

func tooBig(n int64) error {
	return &badFileError{"is " + strconv.FormatInt(n, 10) + " bytes or more, larger than any lock info (" +
		strconv.Itoa(maxInfoSize) + " bytes at most)", unix.EFBIG}
}

// lstat returns the status of name without following a symbolic link.
func (d *lockDir) lstat(name string, st *unix.Stat_t) error {
	return d.use(func(dfd int) error {
		return unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// unlink removes name (a symbolic link itself, never its target).
func (d *lockDir) unlink(name string) error {
	return d.use(func(dfd int) error { return unix.Unlinkat(dfd, name, 0) })
}

// names lists the directory.
func (d *lockDir) names() ([]string, error) {
	var names []string
	err := d.use(func(dfd int) error {
		fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), d.path)
		defer f.Close()
		names, err = f.Readdirnames(-1)
		return err
	})
	return names, err
}
