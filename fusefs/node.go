package fusefs

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/sirupsen/logrus"

	"scanlockfs/lockmgr"
)

// fileSystem is the state shared by every node of one mount.
type fileSystem struct {
	mgr      *lockmgr.Manager
	log      logrus.FieldLogger
	debug    bool
	timeout  time.Duration
	readOnly bool
	root     *fs.Inode
	// mountpoint is the absolute mount point, to recognise descriptors
	// into the mount in /proc/PID/fd.
	mountpoint string
	// hidden is the name of the real lock directory at the root, which the
	// mount does not show ("" if the lock directory is elsewhere).
	hidden string

	stats counters
	// errnos counts the errno values lock refusals returned (errno.go).
	errnos errnoCounts
	// status is the virtual .locks directory (locksdir.go); nil in unit
	// tests that build a fileSystem without a mount.
	status *statusView

	mu      sync.Mutex // guards holders; never held while waiting
	holders holding
}

// node is a loopback node that takes scan locks. Every node of the
// mount is one (WrapChild wraps the children LoopbackNode creates).
type node struct {
	*fs.LoopbackNode
	fsys *fileSystem
}

var _ = (fs.NodeWrapChilder)((*node)(nil))

// WrapChild makes the nodes that LoopbackNode creates (Lookup, Create,
// Mkdir...) ours, so that they take locks too.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if _, ok := ops.(*statusDir); ok {
		return ops // the status view at the root takes no locks
	}
	lb, ok := ops.(*fs.LoopbackNode)
	if !ok {
		n.fsys.log.Errorf("WrapChild: unexpected node type %T; it takes no scan locks", ops)
		return ops
	}
	return &node{LoopbackNode: lb, fsys: n.fsys}
}

// isRoot reports whether n is the mount's root directory.
func (n *node) isRoot() bool { return n.EmbeddedInode() == n.fsys.root }

// orphanPath is the relative path of a node that lost its last name
// (unlinked while open, or O_TMPFILE): no scan, as it starts with '.'.
const orphanPath = ".deleted"

// relPath returns n's path relative to the mount root ("" for the root).
func (n *node) relPath() string {
	if n.isRoot() {
		return ""
	}
	// Path would log a warning for every orphan.
	if _, parent := n.Parent(); parent == nil {
		return orphanPath
	}
	return n.Path(n.fsys.root)
}

// childPath returns the relative path of name in directory n.
func (n *node) childPath(name string) string {
	if n.isRoot() {
		return name
	}
	return n.relPath() + "/" + name
}

// scanOfPath returns the scan that a path relative to the root belongs
// to: its first component, if that is a valid scan id and the path is
// inside it or is it and names a directory. Root files (users.json,
// romidb) and names that cannot be scan ids belong to no scan ("").
func scanOfPath(rel string, isDir bool) string {
	if rel == "" {
		return ""
	}
	first, _, inside := strings.Cut(rel, "/")
	if !inside && !isDir {
		return ""
	}
	if lockmgr.ValidateScanID(first) != nil {
		return ""
	}
	return first
}

// scan returns the scan n belongs to, and its relative path.
func (n *node) scan() (scan, rel string) {
	rel = n.relPath()
	return scanOfPath(rel, n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFDIR), rel
}

// entryScan returns the scan of entry name in directory n. At the root,
// only directories are scans; dirLike says whether the entry is or
// becomes one.
func (n *node) entryScan(name string, dirLike bool) string {
	if n.isRoot() {
		return scanOfPath(name, dirLike)
	}
	s, _ := n.scan()
	return s
}

// isHidden reports whether name in n is the real lock directory or the
// name of the status view that takes its place (.locks at the root).
func (n *node) isHidden(name string) bool {
	return (name == statusDirName || n.fsys.hidden != "" && name == n.fsys.hidden) && n.isRoot()
}

// isDirAt reports whether name in n is a directory on the backing file
// system (false if it does not exist).
func (n *node) isDirAt(name string) bool {
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(n.backingPath(), name), &st); err != nil {
		return false
	}
	return st.Mode&syscall.S_IFMT == syscall.S_IFDIR
}

// backingPath returns n's path on the backing file system.
func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.relPath())
}
