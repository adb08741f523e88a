package fusefs

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

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
	names     map[string]nameEvent
	self, all bool
}

// nameEvent is the union of a name's event masks, and the last ticket
// of the mount's own requests that may have caused them (notify_own.go).
type nameEvent struct {
	mask uint32
	upTo uint64
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

// read reads events until the notifier is closed.
func (nt *notifier) read() {
	buf := make([]byte, 64<<10)
	for {
		k, err := nt.file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				nt.fsys.log.WithError(err).Warn("inotify read failed: names changed on SOURCE are seen within an entry timeout of 100ms at most")
				nt.uncoverAll()
			}
			return
		}
		nt.parse(buf[:k])
	}
}

// uncoverAll gives up on notification: lookups get the short entry
// timeout everywhere.
func (nt *notifier) uncoverAll() {
	nt.failed.Store(true)
	nt.mu.Lock()
	defer nt.mu.Unlock()
	for _, n := range nt.byWD {
		n.watched.tried.Store(true)
		n.watched.covered.Store(false)
	}
}

// parse queues the events in buf.
func (nt *notifier) parse(buf []byte) {
	upTo := nt.own.mark()
	nt.mu.Lock()
	defer nt.mu.Unlock()
	for len(buf) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(buf) {
			return
		}
		name := string(buf[unix.SizeofInotifyEvent:end])
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		buf = buf[end:]
		nt.events.Add(1)
		switch {
		case ev.Mask&unix.IN_Q_OVERFLOW != 0:
			nt.overflowLocked()
		case ev.Mask&unix.IN_IGNORED != 0:
			// The directory is gone (or unwatched): nothing more
			// comes for it.
			if n, ok := nt.byWD[ev.Wd]; ok {
				delete(nt.byWD, ev.Wd)
				nt.watches.Add(-1)
				n.lostWatch(ev.Wd)
			}
		default:
			if n, ok := nt.byWD[ev.Wd]; ok {
				nt.queueLocked(n, func(e *dirEvents) {
					if name == "" {
						e.self = true
						return
					}
					ne := e.names[name]
					e.names[name] = nameEvent{mask: ne.mask | ev.Mask, upTo: max(ne.upTo, upTo)}
				})
			}
		}
	}
}

// lostWatch forgets a watch the kernel removed (its directory is gone).
func (n *node) lostWatch(wd int32) {
	if n.watched.wd.CompareAndSwap(wd, 0) {
		n.watched.covered.Store(false)
	}
}

// overflowLocked queues a full invalidation of every watched directory.
func (nt *notifier) overflowLocked() {
	nt.overflows.Add(1)
	nt.fsys.log.Warn("inotify queue overflow: invalidating every name the kernel caches")
	for _, n := range nt.byWD {
		nt.queueLocked(n, func(e *dirEvents) { e.all = true })
	}
}

// queueLocked adds to n's pending events and starts its goroutine if it
// is not running.
func (nt *notifier) queueLocked(n *node, add func(*dirEvents)) {
	e, running := nt.pending[n]
	if !running {
		e = &dirEvents{names: map[string]nameEvent{}}
		nt.pending[n] = e
	}
	add(e)
	if !running {
		go nt.flush(n)
	}
}

// flush passes n's pending events on until there are none.
func (nt *notifier) flush(n *node) {
	for {
		nt.mu.Lock()
		e := nt.pending[n]
		if len(e.names) == 0 && !e.self && !e.all {
			delete(nt.pending, n)
			nt.mu.Unlock()
			return
		}
		nt.pending[n] = &dirEvents{names: map[string]nameEvent{}}
		nt.mu.Unlock()
		if e.all {
			nt.invalidateAll(n)
			continue
		}
		if e.self {
			nt.notified(n.NotifyContent(-1, 0))
		}
		for name, ne := range e.names {
			if !nt.own.after(name, ne.upTo, func() { nt.requeue(n, name, ne.mask) }) {
				nt.pass(n, name, ne.mask)
			}
		}
	}
}

// requeue queues an event held back by the mount's own request, which
// has finished.
func (nt *notifier) requeue(n *node, name string, mask uint32) {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if nt.closed {
		return
	}
	nt.queueLocked(n, func(e *dirEvents) {
		ne := e.names[name]
		e.names[name] = nameEvent{mask: ne.mask | mask, upTo: ne.upTo}
	})
}

// pass tells the kernel about name in n if what it was given differs
// from SOURCE now.
func (nt *notifier) pass(n *node, name string, mask uint32) {
	if n.isHidden(name) {
		return
	}
	child := n.GetChild(name)
	if child == nil && mask&^uint32(unix.IN_ATTRIB) == 0 {
		return // attributes of something the kernel has no node for
	}
	st, btime, errno := n.lookupStat(name)
	exists := errno == 0
	switch {
	case errno != 0 && errno != syscall.ENOENT:
		nt.notified(n.NotifyEntry(name))
	case exists && child != nil && child.StableAttr() == n.fsys.back.stableAttr(&st, btime):
		// The kernel's entry is right; its attributes may not be.
		if mask&unix.IN_ATTRIB == 0 {
			return
		}
		if cn, ok := child.Operations().(*node); ok && cn.toldStamp() != stampOfStat(&st) {
			nt.notified(child.NotifyContent(-1, 0))
		}
	case !exists && child == nil:
		// The kernel has no entry, or a negative one, which is right.
	case !exists:
		nt.notified(n.NotifyDelete(name, child))
	default:
		nt.notified(n.NotifyEntry(name))
	}
}

// invalidateAll drops every name and attribute the kernel may cache in
// n (after an overflow): its children's entries and attributes, and n's
// own entry in its parent, which takes the negative entries below n with
// it.
func (nt *notifier) invalidateAll(n *node) {
	for name, child := range n.Children() {
		nt.notified(child.NotifyContent(-1, 0))
		nt.notified(n.NotifyEntry(name))
	}
	nt.notified(n.NotifyContent(-1, 0))
	if name, parent := n.Parent(); parent != nil {
		nt.notified(parent.NotifyEntry(name))
	}
}

// notified counts a notification sent; ENOENT (the kernel had nothing
// cached) is normal.
func (nt *notifier) notified(errno syscall.Errno) {
	if errno == 0 || errno == syscall.ENOENT {
		nt.sent.Add(1)
		return
	}
	if nt.fsys.debug {
		nt.fsys.log.WithField("errno", errno).Debug("kernel cache notification failed")
	}
}

// notifyStats are the notifier's counters, for .locks/metrics.
type notifyStats struct {
	events, sent, overflows, watchFailures uint64
	watches                                int64
}

func (nt *notifier) stats() notifyStats {
	if nt == nil {
		return notifyStats{}
	}
	return notifyStats{events: nt.events.Load(), sent: nt.sent.Load(), overflows: nt.overflows.Load(),
		watchFailures: nt.watchFailures.Load(), watches: nt.watches.Load()}
}

// toldStamp is what the kernel was last told of n's attributes.
func (n *node) toldStamp() attrStamp {
	n.told.mu.Lock()
	defer n.told.mu.Unlock()
	return n.told.s
}
