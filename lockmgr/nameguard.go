package lockmgr

import (
	"errors"
	"os"
	"strings"
	"sync"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Name guards: plantdb's release unlinks whatever S.lock names, and
// some of its releases cannot be seen coming: a plantdb process that let
// go of an orphan (foreign.go) just before our grant, or whose S.info
// another release already removed, or a plantdb reader that shared our
// flock before this process knew plantdb was there. Its unlink then
// takes the name from the file we hold, and plantdb's next attempt would
// create and lock a new S.lock while we still hold the old one.
//
// So the backend watches the lock directory (one inotify watch, read by
// one goroutine). When the lock file of a scan we hold loses its name
// (unlinked, renamed, or another file renamed over it), it opens S.lock
// at once (creating it) and flocks it as we flock ours: a guard, kept
// until our release, which plantdb's polling attempts then find locked. Only an attempt that lands in the microseconds between
// the unlink and the guard's flock still gets in; then the guard fails
// and our release reports the hold as lost, as before. Guarded are the
// holds on scans where plantdb is known, and every hold taken with
// LOCK_SH (a plantdb reader may share it unseen); an exclusive hold with
// no sign of plantdb is not, because then only a tool outside the
// protocol unlinks the file, such as rm -r of the database, which a
// guard would fight.

// guardState is what a scan's hold keeps through lost names. The
// watcher's goroutine and the goroutine in lock or unlock both take its
// mutex; under it only the foreign state's mutex (a leaf) is taken.
type guardState struct {
	mu     sync.Mutex
	on     bool  // a hold of ours is granted and not being released
	kernel int   // how the hold's flock was taken: LOCK_SH or LOCK_EX
	fds    []int // guards: lock files created after the name was lost, flocked
	failed bool  // a guard could not be flocked: somebody else got the new file
}

// guardOn runs just before the grant's last check of the name: from then
// on a lost name is guarded.
func (f *lockFile) guardOn() {
	how := unix.LOCK_SH
	if f.kernelEx {
		how = unix.LOCK_EX
	}
	f.guard.mu.Lock()
	f.guard.on, f.guard.kernel = true, how
	f.guard.mu.Unlock()
}

// guardOff ends the guarding of a hold (its release, or a grant given
// back) and closes the guards, which drops their flocks.
func (f *lockFile) guardOff() {
	f.guard.mu.Lock()
	defer f.guard.mu.Unlock()
	for _, fd := range f.guard.fds {
		unix.Close(fd)
	}
	f.guard.on, f.guard.fds, f.guard.failed = false, nil, false
}

// guarded reports whether our hold lost its file's name and every new
// file was held in time (no other process can have locked the scan).
func (f *lockFile) guarded() bool {
	f.guard.mu.Lock()
	defer f.guard.mu.Unlock()
	return len(f.guard.fds) > 0 && !f.guard.failed
}

// guardName runs when the directory watch saw S.lock lose its name.
func (f *lockFile) guardName() {
	f.guard.mu.Lock()
	defer f.guard.mu.Unlock()
	if !f.guard.on || f.guard.kernel == unix.LOCK_EX && !f.foreignKnown() {
		// An exclusive hold with no sign of plantdb: only a tool outside
		// the protocol unlinks the file (rm -r of the database), and a
		// guard would fight it. A shared one may be shared by a plantdb
		// reader that was never seen.
		return
	}
	var st unix.Stat_t
	if f.b.dir.nameStat(f.lockRel, f.lockPath, &st) == nil && f.guardedFile(fileID{dev: st.Dev, ino: st.Ino}) {
		return // still (or again) a file of ours
	}
	fd, st, err := f.b.dir.openFile(f.id+".lock", unix.O_RDWR, true, uint32(f.b.cfg.fileMode), true)
	if err != nil {
		f.guard.failed = true
		return
	}
	ok, err := flockNB(fd, f.guard.kernel)
	if !ok || err != nil {
		unix.Close(fd)
		f.guard.failed = true
		f.b.log.WithField("scan", f.id).Debug("the lock file lost its name during our hold and another process locked the new one first")
		return
	}
	f.b.fixMode(fd, &st)
	f.guard.fds = append(f.guard.fds, fd)
	f.b.log.WithFields(logrus.Fields{"scan": f.id}).Debug("the lock file lost its name during our hold; holding the new one too")
}

// guardedFile reports whether id is a guard's file, or the file our hold
// was granted on (f.fid belongs to the goroutine in lock or unlock: the
// identity kept in the foreign state is read instead). Called with
// f.guard.mu held.
func (f *lockFile) guardedFile(id fileID) bool {
	f.fs.mu.Lock()
	ours := f.fs.lastID == id
	f.fs.mu.Unlock()
	if ours {
		return true
	}
	for _, fd := range f.guard.fds {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && (fileID{dev: st.Dev, ino: st.Ino}) == id {
			return true
		}
	}
	return false
}

// nameWatch is the backend's inotify watch on the lock directory.
type nameWatch struct {
	once sync.Once
	file *os.File // the inotify descriptor; nil if it could not be set up
}

// watchNames starts the watch (New does, for a manager that may lock);
// without inotify (or its instances used up) lost names are not guarded.
func (b *flockBackend) watchNames() {
	b.names.once.Do(func() {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			b.log.WithError(err).Debug("no inotify: lock files that lose their name during a hold are not guarded")
			return
		}
		if _, err := unix.InotifyAddWatch(fd, b.lockDir, unix.IN_DELETE|unix.IN_MOVED_FROM|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
			unix.Close(fd)
			b.log.WithError(err).WithField("dir", b.lockDir).Debug("cannot watch the lock directory: lock files that lose their name during a hold are not guarded")
			return
		}
		b.names.file = os.NewFile(uintptr(fd), "inotify:"+b.lockDir)
		go b.readNames(b.names.file)
	})
}

// readNames reads the watch's events until the backend closes it.
func (b *flockBackend) readNames(file *os.File) {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				b.log.WithError(err).Debug("lock directory watch ended")
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			end := off + unix.SizeofInotifyEvent + int(ev.Len)
			if end > n {
				break
			}
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:end]), "\x00")
			off = end
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				b.guardAll()
				continue
			}
			if id, ok := strings.CutSuffix(name, ".lock"); ok {
				b.mu.Lock()
				f := b.files[id]
				b.mu.Unlock()
				if f != nil {
					f.guardName()
				}
			}
		}
	}
}

// guardAll checks every scan after lost events.
func (b *flockBackend) guardAll() {
	b.mu.Lock()
	files := make([]*lockFile, 0, len(b.files))
	for _, f := range b.files {
		files = append(files, f)
	}
	b.mu.Unlock()
	for _, f := range files {
		f.guardName()
	}
}

// stopWatch ends the watch.
func (b *flockBackend) stopWatch() {
	b.names.once.Do(func() {}) // no watch may start after this
	if b.names.file != nil {
		b.names.file.Close()
	}
}
