package fusefs

import (
	"os"
	"time"

	"scanlockfs/lockmgr"
	"scanlockfs/scanstatus"
)

// The JSON documents of MOUNTPOINT/.locks, <scan_id>.info and
// status.json, are package scanstatus's InfoDoc and MountDoc: the daemon
// converts lockmgr's status into that model once, hides what the reader
// may not see (status_viewer.go) and encodes it.

// renderInfo renders the .info document of one scan from its status (or
// from err, the reason there is none), hiding what r hides (nil: show
// everything).
func renderInfo(st *lockmgr.ScanStatus, err error, now time.Time, r scanstatus.Redactor) []byte {
	return scanstatus.Encode(scanstatus.NewInfoDoc(st, err, now, r))
}

// renderMountStatus renders status.json: the mount's fields with the
// scans of list, or err if they could not be listed, hiding what r hides
// (nil: show everything).
func (fsys *fileSystem) renderMountStatus(list []*lockmgr.ScanStatus, err error, now time.Time, r scanstatus.Redactor) []byte {
	return scanstatus.Encode(scanstatus.NewMountDoc(fsys.mountStatusHeader(), list, err, now, r))
}

// mountStatusHeader is status.json without its scans.
func (fsys *fileSystem) mountStatusHeader() scanstatus.MountDoc {
	timeout := fsys.timeout
	if timeout == 0 {
		timeout = fsys.mgr.Timeout()
	}
	return scanstatus.MountDoc{
		Source: fsys.status.source, Mountpoint: fsys.status.mountpoint, LockDir: fsys.mgr.LockDir(),
		PID: os.Getpid(), TimeoutSeconds: timeout.Seconds(), ReadOnly: fsys.readOnly,
	}
}

// unixSeconds is t in seconds since the epoch, as the documents write it.
func unixSeconds(t time.Time) float64 { return scanstatus.UnixSeconds(t) }
