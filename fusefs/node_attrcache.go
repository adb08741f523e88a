package fusefs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The kernel caches names and attributes for the entry and attribute
// timeouts (Options), and a change made on SOURCE by another process
// (plantdb, `scanlockfs run`, lockmgr) does not tell it. What a program
// that opens a file after the writer released its lock must see at once
// (the data, the size from fstat, stat after the open) is made true at
// OPEN, under the scan lock, by this rule:
//
//   - every reply that gives the kernel a node's attributes (LOOKUP,
//     READDIRPLUS, CREATE, GETATTR, STATX, SETATTR...) notes the size,
//     mtime and ctime it gave (told);
//   - an OPEN stats the backing inode anyway (the inode check,
//     node_backing.go); if size, mtime or ctime differ from what the kernel
//     was told, the daemon invalidates the kernel's attributes and cached
//     data of that inode (FUSE_NOTIFY_INVAL_INODE) before it answers. The
//     open then returns with nothing stale cached for the file: fstat,
//     stat and reads ask the daemon again.
//
// That is cheaper than invalidating a whole scan on each lock hand-over:
// only the file opened, only when it changed. Names need no rule of their
// own: an OPEN through a cached name checks the inode behind the path on
// SOURCE, a file replaced meanwhile fails with ESTALE and the kernel looks
// the name up again (LOOKUP_REVAL), a deleted one fails with ENOENT.
// Negative entries are not cached by default (a file created on SOURCE is
// found at once). While the mount holds the scan's lock nobody else may
// change it, so what the kernel caches then stays true; what it caches of
// a scan nobody holds may lag by the attribute timeout.

// attrStamp is what tells a changed inode from an unchanged one.
type attrStamp struct {
	size                 uint64
	mtimeSec, ctimeSec   int64
	mtimeNsec, ctimeNsec int64
	known                bool
}

func stampOfStat(st *syscall.Stat_t) attrStamp {
	return attrStamp{size: uint64(st.Size), mtimeSec: st.Mtim.Sec, mtimeNsec: st.Mtim.Nsec,
		ctimeSec: st.Ctim.Sec, ctimeNsec: st.Ctim.Nsec, known: true}
}

func stampOfAttr(a *fuse.Attr) attrStamp {
	return attrStamp{size: a.Size, mtimeSec: int64(a.Mtime), mtimeNsec: int64(a.Mtimensec),
		ctimeSec: int64(a.Ctime), ctimeNsec: int64(a.Ctimensec), known: true}
}

func stampOfStatx(x *fuse.Statx) attrStamp {
	return attrStamp{size: x.Size, mtimeSec: int64(x.Mtime.Sec), mtimeNsec: int64(x.Mtime.Nsec),
		ctimeSec: int64(x.Ctime.Sec), ctimeNsec: int64(x.Ctime.Nsec), known: true}
}

// toldAttrs is a node's last stamp given to the kernel.
type toldAttrs struct {
	mu sync.Mutex
	s  attrStamp
}

// tell notes that the kernel was given s for n.
func (n *node) tell(s attrStamp) {
	n.told.mu.Lock()
	n.told.s = s
	n.told.mu.Unlock()
}

// told notes the attributes of a successful reply; it returns errno.
func (n *node) toldAttr(errno syscall.Errno, a *fuse.Attr) syscall.Errno {
	if errno == 0 {
		n.tell(stampOfAttr(a))
	}
	return errno
}

// refresh is the OPEN rule above: st is the backing inode's stat, taken
// under the scan lock.
func (n *node) refresh(st *syscall.Stat_t) {
	now := stampOfStat(st)
	n.told.mu.Lock()
	stale := n.told.s != now
	n.told.s = now
	n.told.mu.Unlock()
	if !stale || n.fsys.attrTimeout == 0 {
		return
	}
	// Offset 0, length 0: the attributes and every cached page.
	if errno := n.NotifyContent(0, 0); errno != 0 && errno != syscall.ENOENT {
		n.fsys.log.WithField("path", n.relPath()).WithField("errno", errno).Warn("cannot invalidate the kernel's cache of a file changed on SOURCE")
	}
	n.fsys.invalidations.Add(1)
}
