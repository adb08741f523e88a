package fusefs

import (
	"errors"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reading inotify's events and passing them on to the kernel (notify.go
// says what and why): one reader goroutine queues each directory's events
// and starts a goroutine per directory with events, which checks each
// name against SOURCE and tells the kernel what it has wrong.

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
