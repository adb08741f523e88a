package fusefs

import (
	"context"
	"slices"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The mount's own changes of names (CREATE, MKDIR, UNLINK, RENAME...)
// come back from inotify too, often before go-fuse has added or removed
// the node, so that the check of notify.go would find the kernel wrong
// and invalidate the very entry the request is about to give it. So a
// request that changes a name holds a ticket for it from the moment its
// scan locks are granted (underLock calls granted; it changes SOURCE
// only after that) until go-fuse's raw layer returns, once its node tree
// shows the outcome; an event for a name waits, without blocking its
// directory's other events, until the requests holding a ticket for that
// name when the event was read have finished. Names, not directories,
// are the key (the raw layer knows directories only by node id), and the
// ticket is taken after the lock wait, so an event waits only for
// requests that are already changing SOURCE, never for one waiting for
// its lock. A request is recognised across the layers by its
// cancellation channel, which go-fuse gives each request in flight and
// passes to the node methods in their fuse.Context.

// ownChanges are the name-changing requests in flight.
type ownChanges struct {
	mu      sync.Mutex
	seq     uint64
	byReq   map[<-chan struct{}]*ownReq
	active  map[string][]uint64 // name -> tickets held now
	waiting map[string][]ownWaiter
}

// ownReq is a name-changing request in flight: its names, and its
// ticket once its locks are granted (0 before).
type ownReq struct {
	names  []string
	ticket uint64
}

// ownWaiter runs then once no request for its name with a ticket up to
// upTo is in flight.
type ownWaiter struct {
	upTo uint64
	then func()
}

func newOwnChanges() *ownChanges {
	return &ownChanges{byReq: map[<-chan struct{}]*ownReq{}, active: map[string][]uint64{},
		waiting: map[string][]ownWaiter{}}
}

// enter records request x, which will change names.
func (o *ownChanges) enter(x <-chan struct{}, names ...string) {
	o.mu.Lock()
	o.byReq[x] = &ownReq{names: names}
	o.mu.Unlock()
}

// granted gives the request of ctx, if it changes names, its ticket.
func (nt *notifier) granted(ctx context.Context) {
	if nt == nil {
		return
	}
	fc, ok := ctx.(*fuse.Context)
	if !ok {
		return
	}
	o := nt.own
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.byReq[fc.Cancel]
	if r == nil || r.ticket != 0 {
		return
	}
	o.seq++
	r.ticket = o.seq
	for _, name := range r.names {
		o.active[name] = append(o.active[name], r.ticket)
	}
}

// leave forgets request x and runs the waiters its ticket held up.
func (o *ownChanges) leave(x <-chan struct{}) {
	var run []func()
	o.mu.Lock()
	r := o.byReq[x]
	delete(o.byReq, x)
	if r != nil && r.ticket != 0 {
		for _, name := range r.names {
			run = o.dropLocked(name, r.ticket, run)
		}
	}
	o.mu.Unlock()
	for _, f := range run {
		f()
	}
}

// dropLocked gives ticket t for name back and appends to run the waiters
// it no longer holds up.
func (o *ownChanges) dropLocked(name string, t uint64, run []func()) []func() {
	if a := slices.DeleteFunc(o.active[name], func(s uint64) bool { return s == t }); len(a) > 0 {
		o.active[name] = a
	} else {
		delete(o.active, name)
	}
	ws := o.waiting[name]
	keep := ws[:0]
	for _, w := range ws {
		if o.busyLocked(name, w.upTo) {
			keep = append(keep, w)
		} else {
			run = append(run, w.then)
		}
	}
	if len(keep) > 0 {
		o.waiting[name] = keep
	} else {
		delete(o.waiting, name)
	}
	return run
}

// mark is the last ticket given: requests that may have caused the
// events read so far have tickets up to it.
func (o *ownChanges) mark() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seq
}

func (o *ownChanges) busyLocked(name string, upTo uint64) bool {
	for _, s := range o.active[name] {
		if s <= upTo {
			return true
		}
	}
	return false
}

// after arranges for then to run once the requests for name with
// tickets up to upTo have finished, and reports true; if none is in
// flight it does nothing and reports false.
func (o *ownChanges) after(name string, upTo uint64, then func()) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.busyLocked(name, upTo) {
		return false
	}
	o.waiting[name] = append(o.waiting[name], ownWaiter{upTo: upTo, then: then})
	return true
}

// changingAttrs gives a SETATTR of n, the request of ctx, a ticket for
// n's name, like the requests below that change names: the IN_ATTRIB it
// causes could otherwise be read before the request records what it told
// the kernel (toldAttr), and cost a needless invalidation of n's
// attributes (rsync and cp -p set them on every file). The returned
// function ends the ticket, once that is recorded.
func (nt *notifier) changingAttrs(ctx context.Context, n *node) func() {
	fc, ok := ctx.(*fuse.Context)
	if nt == nil || !ok {
		return func() {}
	}
	name, parent := n.Parent()
	if parent == nil {
		return func() {}
	}
	nt.own.enter(fc.Cancel, name)
	return func() { nt.own.leave(fc.Cancel) }
}

// ownChangeFS is the raw file system with tickets for the requests that
// change names.
type ownChangeFS struct {
	fuse.RawFileSystem
	o *ownChanges
}

// changing runs op, request x of the raw layer, which changes names.
func (f *ownChangeFS) changing(x <-chan struct{}, names []string, op func() fuse.Status) fuse.Status {
	f.o.enter(x, names...)
	defer f.o.leave(x)
	return op()
}

func (f *ownChangeFS) Create(x <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return f.changing(x, []string{name}, func() fuse.Status { return f.RawFileSystem.Create(x, in, name, out) })
}

func (f *ownChangeFS) Mknod(x <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.changing(x, []string{name}, func() fuse.Status { return f.RawFileSystem.Mknod(x, in, name, out) })
}

func (f *ownChangeFS) Mkdir(x <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.changing(x, []string{name}, func() fuse.Status { return f.RawFileSystem.Mkdir(x, in, name, out) })
}

func (f *ownChangeFS) Unlink(x <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.changing(x, []string{name}, func() fuse.Status { return f.RawFileSystem.Unlink(x, h, name) })
}

func (f *ownChangeFS) Rmdir(x <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.changing(x, []string{name}, func() fuse.Status { return f.RawFileSystem.Rmdir(x, h, name) })
}

func (f *ownChangeFS) Rename(x <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return f.changing(x, []string{oldName, newName}, func() fuse.Status { return f.RawFileSystem.Rename(x, in, oldName, newName) })
}

func (f *ownChangeFS) Link(x <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return f.changing(x, []string{name}, func() fuse.Status { return f.RawFileSystem.Link(x, in, name, out) })
}

func (f *ownChangeFS) Symlink(x <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return f.changing(x, []string{name}, func() fuse.Status { return f.RawFileSystem.Symlink(x, h, target, name, out) })
}
