package fusefs

import (
	"context"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

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

	// back is SOURCE, reached only through descriptors (backing.go).
	back *backing
	// requests counts FUSE requests by opcode (requests.go).
	requests reqCounts
	// attrTimeout and entryTimeout are the kernel's attribute and entry
	// cache timeouts (Options).
	attrTimeout, entryTimeout time.Duration
	// invalidations counts kernel cache invalidations of files changed
	// on SOURCE (node_attrcache.go).
	invalidations atomic.Uint64
	// dirFDs counts the descriptors directory nodes keep (node_dirfd.go).
	dirFDs atomic.Int64
	// notify passes changes made on SOURCE to the kernel (notify.go);
	// nil without inotify.
	notify *notifier
}

// node is a node of the mount backed by SOURCE. It embeds fs.Inode
// only: every operation on the backing file system is implemented here,
// through descriptors (backing.go), so that no path-based loopback code
// is reached by accident.
type node struct {
	// Release is a field so that node cannot have a Release method and
	// so never implements fs.NodeReleaser (see api_check.go).
	Release noRelease

	fs.Inode
	fsys *fileSystem
	// dir is a directory node's kept descriptor (node_dirfd.go).
	dir dirFD
	// told is what the kernel was last told of n's attributes
	// (node_attrcache.go).
	told toldAttrs
	// files are the descriptors of n's open files (node_files.go).
	files openFiles
	// watched is a directory node's inotify watch (notify.go).
	watched dirWatch
}

// noRelease is the type of node.Release.
type noRelease struct{}

// newNode returns the node for a backing inode found or created in n.
// The kernel gets st as the node's attributes.
func (n *node) newNode(ctx context.Context, st *syscall.Stat_t, btime unix.StatxTimestamp) *fs.Inode {
	child := n.NewInode(ctx, &node{fsys: n.fsys}, n.fsys.back.stableAttr(st, btime))
	if cn, ok := child.Operations().(*node); ok {
		cn.tell(stampOfStat(st))
	}
	return child
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
// system (false if it does not exist or n cannot be resolved).
func (n *node) isDirAt(name string) bool {
	dfd, done, errno := n.openDir()
	if errno != 0 {
		return false
	}
	defer done()
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR
}
