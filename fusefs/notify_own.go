package fusefs

import (
	"slices"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The mount's own changes of names (CREATE, MKDIR, UNLINK, RENAME...)
// come back from inotify too, often before go-fuse has added or removed
// the node, so that the check of notify.go would find the kernel wrong
// and invalidate the very entry the request is about to give it. So
// requests that change a name hold a ticket for it while they run (from
// go-fuse's raw layer, which returns once its node tree shows the
// outcome), and an event for a name waits, without blocking its
// directory's other events, until the requests for that name begun
// before the event was read have finished. Names, not directories, are
// the key: the raw layer knows directories only by node id. A request
// for the same name in another directory may delay the event as long as
// that request runs, which for one waiting for its scan lock is up to
// the lock timeout.

// ownChanges are the name-changing requests in flight.
type ownChanges struct {
	mu      sync.Mutex
	seq     uint64
	active  map[string][]uint64 // name -> tickets of requests in flight
	waiting map[string][]ownWaiter
}

// ownWaiter runs then once no request for its name with a ticket up to
// upTo is in flight.
type ownWaiter struct {
	upTo uint64
	then func()
}

func newOwnChanges() *ownChanges {
	return &ownChanges{active: map[string][]uint64{}, waiting: map[string][]ownWaiter{}}
}

// begin takes a ticket for a request changing names.
func (o *ownChanges) begin(names ...string) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq++
	for _, name := range names {
		o.active[name] = append(o.active[name], o.seq)
	}
	return o.seq
}

// end gives ticket t back and runs the waiters it was holding up.
func (o *ownChanges) end(t uint64, names ...string) {
	var run []func()
	o.mu.Lock()
	for _, name := range names {
		if a := slices.DeleteFunc(o.active[name], func(s uint64) bool { return s == t }); len(a) > 0 {
			o.active[name] = a
		} else {
			delete(o.active, name)
		}
		ws := o.waiting[name]
		if len(ws) == 0 {
			continue
		}
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
	}
	o.mu.Unlock()
	for _, f := range run {
		f()
	}
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

// ownChangeFS is the raw file system with tickets for the requests that
// change names.
type ownChangeFS struct {
	fuse.RawFileSystem
	o *ownChanges
}

func (f *ownChangeFS) Create(x <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	defer f.o.end(f.o.begin(name), name)
	return f.RawFileSystem.Create(x, in, name, out)
}

func (f *ownChangeFS) Mknod(x <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	defer f.o.end(f.o.begin(name), name)
	return f.RawFileSystem.Mknod(x, in, name, out)
}

func (f *ownChangeFS) Mkdir(x <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	defer f.o.end(f.o.begin(name), name)
	return f.RawFileSystem.Mkdir(x, in, name, out)
}

func (f *ownChangeFS) Unlink(x <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer f.o.end(f.o.begin(name), name)
	return f.RawFileSystem.Unlink(x, h, name)
}

func (f *ownChangeFS) Rmdir(x <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	defer f.o.end(f.o.begin(name), name)
	return f.RawFileSystem.Rmdir(x, h, name)
}

func (f *ownChangeFS) Rename(x <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	defer f.o.end(f.o.begin(oldName, newName), oldName, newName)
	return f.RawFileSystem.Rename(x, in, oldName, newName)
}

func (f *ownChangeFS) Link(x <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	defer f.o.end(f.o.begin(name), name)
	return f.RawFileSystem.Link(x, in, name, out)
}

func (f *ownChangeFS) Symlink(x <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	defer f.o.end(f.o.begin(name), name)
	return f.RawFileSystem.Symlink(x, h, target, name, out)
}
