package fusefs

import (
	"time"

	"github.com/sirupsen/logrus"

	"scanlockfs/lockmgr"
)

// Options configure a mount. The command line maps its flags to these;
// fusefs never sees flags. Whatever the options, Mount clears the
// process's umask, so that files created through the mount get exactly
// the mode their creator asked for (see Mount).
type Options struct {
	// Source is the scan database directory shown through the mount.
	Source string

	// Manager hands out the scan locks. Its root must be Source. The
	// mount does not close it: the caller does, after Wait returns, which
	// releases every lock still held.
	Manager *lockmgr.Manager

	// Timeout bounds how long a request waits for a scan lock before it
	// fails with EBUSY. Zero leaves it to the Manager's default
	// (lockmgr.WithTimeout), where zero means "until interrupted".
	Timeout time.Duration

	// ReadOnly mounts read-only: every change fails with EROFS.
	ReadOnly bool

	// AllowOther lets other users use the mount, and then turns on the
	// kernel's permission checks (default_permissions), so that nobody
	// gets around the backing files' modes through the daemon.
	AllowOther bool

	// DebugFUSE logs every FUSE request and reply at debug level.
	DebugFUSE bool

	// NoPassthrough turns the kernel's passthrough off, so that reads
	// and writes go through the daemon. For tests and measurements.
	NoPassthrough bool

	// EntryTimeout, AttrTimeout and NegativeTimeout are how long the
	// kernel may use a name, attributes, or the absence of a name without
	// asking the daemon again; zero asks every time. What a program sees
	// after it got a scan lock does not depend on them (node_attrcache.go),
	// nor do names changed on SOURCE by another process, which are passed
	// on as inotify reports them (notify.go): they bound how stale a stat
	// of a file whose data changed may be for a program that holds no
	// lock, and names where notification may miss changes. The command
	// line's defaults are DefaultEntryTimeout and its siblings.
	EntryTimeout, AttrTimeout, NegativeTimeout time.Duration

	// Logger receives the log; nil discards it.
	Logger logrus.FieldLogger
}

// The default cache timeouts of the command line, go-fuse's (and
// libfuse's): 1 s for names and attributes, no negative entries. A name
// created, removed or renamed on SOURCE by another process is passed to
// the kernel as soon as inotify reports it (notify.go), whatever the
// entry timeout, which then only bounds directories that could not be
// watched; an unlocked stat of a file whose data changed lags by
// DefaultAttrTimeout at most. Negative entries stay off: notification
// is asynchronous, and without them a file created on SOURCE is found at
// once by the next lookup, as before; none of scripts/bench's workloads
// looks a missing name up twice.
const (
	DefaultEntryTimeout    = time.Second
	DefaultAttrTimeout     = time.Second
	DefaultNegativeTimeout = time.Duration(0)
)
