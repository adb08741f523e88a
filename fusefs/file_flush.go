package fusefs

import (
	"context"
	"syscall"
)

// Flush runs on every close(2). go-fuse's loopback flushes by closing a
// dup of the backing descriptor, and dup needs a free descriptor: at the
// daemon's descriptor limit the program's close(2) failed with EMFILE,
// which close never means. Nothing is lost by skipping that flush: the
// backing file is closed, and so flushed, at RELEASE.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	errno := h.LoopbackFile.Flush(ctx)
	if errno == syscall.EMFILE || errno == syscall.ENFILE {
		h.fsys.log.WithField("path", h.req.path).Warn("too many open files: raise LimitNOFILE / ulimit -n of the mount; flush skipped (the file is flushed when it is released)")
		return 0
	}
	return errno
}
