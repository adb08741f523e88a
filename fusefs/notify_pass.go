package fusefs

import (
	"errors"
	"os"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// Reading inotify's events and passing them on to the kernel (notify.go
// says what and why): one reader goroutine checks each name against
// SOURCE and, where the kernel has something wrong, queues the name for
// its directory's goroutine, which tells the kernel. Most events are the
// mount's own changes, which leave the kernel right: they are settled by
// the reader, or by the request that made them once it ends, without a
// goroutine. A goroutine per event cost a goroutine start and a thread
// wake-up on every unlink and create through the mount, more than the
// check itself.

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

// nameChange is one event for a name in a watched directory.
type nameChange struct {
	n    *node
	name string
	mask uint32
}

// parse handles the events in buf: under nt.mu what concerns the watches
// and whole directories, then each name's event (offer) without it.
func (nt *notifier) parse(buf []byte) {
	upTo := nt.own.mark()
	for _, c := range nt.parseLocked(buf) {
		nt.offer(c.n, c.name, c.mask, upTo)
	}
}

// parseLocked handles the events in buf that concern watches and whole
// directories, and returns the others.
func (nt *notifier) parseLocked(buf []byte) []nameChange {
	var names []nameChange
	nt.mu.Lock()
	defer nt.mu.Unlock()
	for len(buf) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(buf) {
			return names
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
			n, ok := nt.byWD[ev.Wd]
			switch {
			case !ok:
			case name == "":
				nt.queueLocked(n, func(e *dirEvents) { e.self = true })
			default:
				names = append(names, nameChange{n: n, name: name, mask: ev.Mask})
			}
		}
	}
	return names
}

// offer passes on an event for name in n read after the mount's own
// requests up to ticket upTo had their locks: once those of them that
// change name have ended (notify_own.go), settleOrQueue checks it and
// queues it only if the kernel must be told.
func (nt *notifier) offer(n *node, name string, mask uint32, upTo uint64) {
	if nt.own.after(name, upTo, func() { nt.settleOrQueue(n, name, mask) }) {
		return
	}
	nt.settleOrQueue(n, name, mask)
}

// settleOrQueue queues name in n for its directory's goroutine unless
// the kernel is right about it. The goroutine checks again before it
// tells the kernel: SOURCE may have changed once more by then.
func (nt *notifier) settleOrQueue(n *node, name string, mask uint32) {
	if fix, _ := n.check(name, mask); fix == fixNothing {
		return
	}
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if nt.closed {
		return
	}
	nt.queueLocked(n, func(e *dirEvents) {
		e.names[name] = e.names[name] | mask
	})
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
		e = &dirEvents{names: map[string]uint32{}}
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
		nt.pending[n] = &dirEvents{names: map[string]uint32{}}
		nt.mu.Unlock()
		if e.all {
			nt.invalidateAll(n)
			continue
		}
		if e.self {
			nt.notified(n.NotifyContent(-1, 0))
		}
		for name, mask := range e.names {
			nt.pass(n, name, mask)
		}
	}
}

// kernelFix is what the kernel must be told about a name.
type kernelFix int

const (
	fixNothing kernelFix = iota
	fixEntry             // NotifyEntry: drop the name
	fixDelete            // NotifyDelete: the name is gone
	fixAttr              // NotifyContent of the child: its attributes changed
)

// check compares what the kernel was given for name in n with SOURCE
// now, and returns what the kernel must be told, and the child it
// concerns.
func (n *node) check(name string, mask uint32) (kernelFix, *fs.Inode) {
	if n.isHidden(name) {
		return fixNothing, nil
	}
	child := n.GetChild(name)
	if child == nil && mask&^uint32(unix.IN_ATTRIB|unix.IN_DELETE|unix.IN_MOVED_FROM) == 0 {
		// Attributes of something the kernel has no node for, or a
		// name that went away and that the kernel does not have
		// (the mount's own unlinks and renames), with no system
		// call. A name that came back since has an event of its own.
		return fixNothing, nil
	}
	st, btime, errno := n.lookupStat(name)
	exists := errno == 0
	switch {
	case errno != 0 && errno != syscall.ENOENT:
		return fixEntry, child
	case exists && child != nil && child.StableAttr() == n.fsys.back.stableAttr(&st, btime):
		// The kernel's entry is right; its attributes may not be.
		if mask&unix.IN_ATTRIB == 0 {
			return fixNothing, nil
		}
		if cn, ok := child.Operations().(*node); ok && cn.toldStamp() != stampOfStat(&st) {
			return fixAttr, child
		}
		return fixNothing, nil
	case !exists && child == nil:
		// The kernel has no entry, or a negative one, which is right.
		return fixNothing, nil
	case !exists:
		return fixDelete, child
	default:
		return fixEntry, child
	}
}

// pass tells the kernel about name in n if what it was given differs
// from SOURCE now. It runs on the directory's goroutine: a notification
// may wait for the kernel's lock of the directory.
func (nt *notifier) pass(n *node, name string, mask uint32) {
	switch fix, child := n.check(name, mask); fix {
	case fixEntry:
		nt.notified(n.NotifyEntry(name))
	case fixDelete:
		nt.notified(n.NotifyDelete(name, child))
	case fixAttr:
		nt.notified(child.NotifyContent(-1, 0))
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
