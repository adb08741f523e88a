package fusefs

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Change notification. The kernel keeps names (and their absence) and
// attributes for the entry, negative and attribute timeouts; a name
// created, removed or renamed on SOURCE by another process (plantdb,
// `scanlockfs run`, lockmgr, any tool) does not tell it. So the daemon
// watches, with inotify, every directory of SOURCE in which the kernel
// may cache names: the root, and each directory node the kernel looked
// up a name in or listed (Lookup, OpendirHandle), until the kernel
// forgets the node (OnForget). The watch is added before the lookup
// stats SOURCE, so no change after the stat goes unreported.
//
// inotify rather than fanotify: it needs no privilege, works on every
// file system SOURCE may be on (fanotify's FID mode does not on some
// network file systems), and reports names relative to a directory,
// which is what the kernel's dentries are. Its cost is one watch per
// directory the kernel knows, which the kernel bounds itself by
// forgetting unused nodes.
//
// Events: IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO (names) and
// IN_ATTRIB (mode, owner, times, link count: with default_permissions
// the kernel decides access on cached modes, so a chmod on SOURCE must
// not wait for the attribute timeout). Data changes (IN_MODIFY) are not
// watched: an open re-checks the file under its lock
// (node_attrcache.go), and an unlocked stat may lag by the attribute
// timeout.
//
// Each event is checked against what the kernel was given before it is
// passed on, so that the daemon's own changes through the mount (which
// the kernel already applied) cost a statx and no invalidation: a name
// whose node go-fuse holds for the same inode, or a missing name the
// kernel has no node for, is already right; otherwise the kernel is
// told (NotifyEntry, NotifyDelete, or the child's attributes with
// NotifyContent). Notifications are sent from a goroutine per
// directory, never from a FUSE handler and never under a mutex: the
// kernel takes the directory's lock to invalidate a name, which a
// request waiting for its scan lock (a create in that directory) may
// hold for as long as it waits, and only that directory's goroutine
// then waits with it.
//
// inotify only reports changes made through the machine's own kernel: on
// a network or FUSE file system (NFS, SMB, Ceph, sshfs...) another host's
// changes go unreported. A directory there, or one that could not be
// watched, is not covered: lookups in it give the kernel an entry
// timeout of uncoveredEntryTimeout at most (the entry timeout of a
// mount without notification), so that its names still lag by no more.
//
// When the event queue overflows (IN_Q_OVERFLOW), every watched
// directory's names and children's attributes are invalidated, and each
// directory's own name in its parent, which drops the negative entries
// below it. When a watch cannot be added (fs.inotify.max_user_watches),
// the daemon logs it once and that directory's names lag by the entry
// and negative timeouts, as without notification.

// uncoveredEntryTimeout bounds the entry timeout of names in
// directories whose changes notification may miss.
const uncoveredEntryTimeout = 100 * time.Millisecond

// notifyMask is what a watch reports.
const notifyMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_ATTRIB | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// notifier is a mount's inotify instance and the directories it watches.
type notifier struct {
	fsys *fileSystem
	file *os.File // the inotify descriptor, read through Go's poller
	// own holds events back while the mount's own request for their
	// name runs (notify_own.go).
	own *ownChanges

	mu sync.Mutex
	// byWD maps a watch descriptor to the directory node it watches.
	byWD map[int32]*node
	// pending holds the events of each directory not yet passed on; a
	// directory is in it while its goroutine runs.
	pending map[*node]*dirEvents
	closed  bool

	limitLogged atomic.Bool
	// failed is set when events can no longer be read: no new watches.
	failed atomic.Bool
	// events, sent, overflows and watchFailures are counters and
	// watches a gauge for .locks/metrics.
	events, sent, overflows, watchFailures atomic.Uint64
	watches                                atomic.Int64
}

// dirEvents are a directory's events not yet passed on: names with the
// union of their masks; self for an attribute change of the directory
// itself; all after an overflow.
type dirEvents struct {
	names     map[string]uint32
	self, all bool
}

// dirWatch is a directory node's watch. mu orders changes; the fields
// are atomic so that a lookup in a watched directory takes no lock.
type dirWatch struct {
	mu sync.Mutex
	wd atomic.Int32 // 0: none
	// tried is set once a watch could not be added, so that lookups do
	// not retry it each time; OnForget clears it.
	tried atomic.Bool
	// covered: the watch reports every change of the directory's names
	// (a local file system).
	covered atomic.Bool
}

// newNotifier starts watching SOURCE's root for fsys. It returns nil if
// inotify is not available (the timeouts alone then bound staleness).
func newNotifier(fsys *fileSystem) *notifier {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		fsys.log.WithError(err).Warn("no inotify: names changed on SOURCE are seen within an entry timeout of 100ms at most")
		return nil
	}
	nt := &notifier{fsys: fsys, file: os.NewFile(uintptr(fd), "inotify"), own: newOwnChanges(),
		byWD: map[int32]*node{}, pending: map[*node]*dirEvents{}}
	go nt.read()
	return nt
}

// close stops the notifier (the mount is gone).
func (nt *notifier) close() {
	if nt == nil {
		return
	}
	nt.mu.Lock()
	nt.closed = true
	nt.mu.Unlock()
	nt.file.Close()
}

// watch makes sure directory n is watched; see the package comment of
// this file. Cheap when it is.
func (n *node) watch() {
	nt := n.fsys.notify
	if nt == nil {
		return
	}
	w := &n.watched
	if w.wd.Load() != 0 || w.tried.Load() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wd.Load() != 0 || w.tried.Load() || nt.failed.Load() {
		return
	}
	path, done, errno := n.watchPath()
	if errno != 0 {
		return // the lookup that follows reports it
	}
	wd, err := nt.addWatch(path)
	local := err == nil && isLocalFS(path)
	done()
	if err != nil {
		w.tried.Store(true)
		nt.watchFailures.Add(1)
		if errors.Is(err, unix.ENOSPC) && !nt.limitLogged.Swap(true) {
			n.fsys.log.Warn("inotify watch limit reached (fs.inotify.max_user_watches): names changed on SOURCE in directories beyond it are seen within an entry timeout of 100ms at most")
		} else if n.fsys.debug {
			n.fsys.log.WithField("path", n.relPath()).WithError(err).Debug("cannot watch directory")
		}
		return
	}
	nt.mu.Lock()
	if prev, ok := nt.byWD[int32(wd)]; ok && prev != n || nt.closed || nt.failed.Load() {
		// The same directory under another node, which owns the
		// watch; or the notifier stopped.
		nt.mu.Unlock()
		w.tried.Store(true)
		return
	}
	nt.byWD[int32(wd)] = n
	nt.mu.Unlock()
	w.wd.Store(int32(wd))
	w.covered.Store(local)
	nt.watches.Add(1)
}

// entryTimeout caps out's entry timeout for a name in n if n's changes
// may go unreported.
func (n *node) entryTimeout(out *fuse.EntryOut) {
	if n.fsys.entryTimeout > uncoveredEntryTimeout && !n.watched.covered.Load() {
		out.SetEntryTimeout(uncoveredEntryTimeout)
	}
}

// isLocalFS reports whether inotify on path sees every change of it: not
// on network and FUSE file systems, whose other clients (or server)
// change them behind the local kernel's back.
func isLocalFS(path string) bool {
	var sfs unix.Statfs_t
	if unix.Statfs(path, &sfs) != nil {
		return false
	}
	switch uint32(sfs.Type) {
	case unix.NFS_SUPER_MAGIC, unix.SMB_SUPER_MAGIC, unix.SMB2_SUPER_MAGIC, unix.CIFS_SUPER_MAGIC,
		unix.FUSE_SUPER_MAGIC, unix.V9FS_MAGIC, unix.CEPH_SUPER_MAGIC, unix.AFS_SUPER_MAGIC,
		unix.AFS_FS_MAGIC, unix.CODA_SUPER_MAGIC, unix.OCFS2_SUPER_MAGIC, gfs2Magic, lustreMagic:
		return false
	}
	return true
}

// Cluster file systems x/sys/unix has no constant for.
const (
	gfs2Magic   = 0x01161970
	lustreMagic = 0x0bd00bd0
)

// watchPath names directory n for inotify_add_watch: SOURCE's path for
// the root, else its checked descriptor through /proc (inotify takes no
// descriptor).
func (n *node) watchPath() (string, func(), syscall.Errno) {
	if n.isRoot() {
		return n.fsys.back.path, func() {}, 0
	}
	d := &n.dir
	d.mu.RLock()
	if d.ok {
		return procPath(d.fd), d.mu.RUnlock, 0
	}
	d.mu.RUnlock()
	fd, done, errno := n.openDir()
	if errno != 0 {
		return "", nil, errno
	}
	return procPath(fd), done, 0
}

// unwatch removes n's watch (OnForget).
func (n *node) unwatch() {
	nt := n.fsys.notify
	if nt == nil {
		return
	}
	w := &n.watched
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tried.Store(false)
	w.covered.Store(false)
	wd := w.wd.Swap(0)
	if wd == 0 {
		return
	}
	nt.mu.Lock()
	owned := nt.byWD[wd] == n
	if owned {
		delete(nt.byWD, wd)
		nt.watches.Add(-1)
	}
	nt.mu.Unlock()
	if owned {
		nt.rmWatch(wd)
	}
}

// addWatch and rmWatch use the inotify descriptor through its RawConn,
// so that close cannot release its number meanwhile (Fd would also turn
// it blocking, and close would then not stop read).
func (nt *notifier) addWatch(path string) (wd int, err error) {
	rc, err := nt.file.SyscallConn()
	if err != nil {
		return 0, err
	}
	if cerr := rc.Control(func(fd uintptr) { wd, err = unix.InotifyAddWatch(int(fd), path, notifyMask) }); cerr != nil {
		return 0, cerr
	}
	return wd, err
}

func (nt *notifier) rmWatch(wd int32) {
	if rc, err := nt.file.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.InotifyRmWatch(int(fd), uint32(wd)) })
	}
}
