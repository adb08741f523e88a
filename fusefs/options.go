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

	// Logger receives the log; nil discards it.
	Logger logrus.FieldLogger
}
