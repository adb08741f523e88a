package mountcmd

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// A FUSE mount whose server died without unmounting (killed, crashed, or
// its machine's OOM killer) stays in the mount table: every access to it
// fails with ENOTCONN ("transport endpoint is not connected") until it is
// unmounted. mount finds it when it checks MOUNTPOINT; with --recover it
// unmounts it, with the code of 'scanlockfs unmount', and mounts again in
// the same command, which is what a restarted service needs.

// errDeadMount marks the MOUNTPOINT error of a dead mount.
var errDeadMount = errors.New("transport endpoint is not connected")

// deadMountRounds bounds how many dead mounts stacked on one MOUNTPOINT
// (a service that crashed several times without --recover) are cleared.
const deadMountRounds = 4

// deadMountError is the error of mount without --recover on a dead mount.
func deadMountError(mp string) error {
	return exitf(ExitMount, "MOUNTPOINT %s is a dead FUSE mount (%w: its server stopped without unmounting): "+
		"mount again with --recover to clear it and mount, or clear it first with 'scanlockfs unmount %s' (or fusermount3 -u %s)",
		mp, errDeadMount, mp, mp)
}

// recoverDeadMount unmounts the dead FUSE mount on mp: normally, or by
// detaching it (MNT_DETACH, fusermount3 -z) when processes still have
// files or their working directory in it. Those processes keep getting
// ENOTCONN for the old paths; new paths reach the new mount. It refuses
// anything that is not a dead FUSE mount.
func recoverDeadMount(mp string, log logrus.FieldLogger) error {
	for round := 0; round < deadMountRounds; round++ {
		var st unix.Stat_t
		err := unix.Stat(mp, &st)
		if !errors.Is(err, syscall.ENOTCONN) {
			return nil // alive, or another problem that mountpointDir reports
		}
		mounts, err := readMountinfo()
		if err != nil {
			return exitf(ExitInternal, "mount --recover: %w", err)
		}
		mi := findMount(mounts, mp)
		if mi == nil {
			// A dead mount above a path component, not on mp itself.
			return exitf(ExitMount, "mount --recover: %s is not reachable (transport endpoint is not connected) but no mount sits on it: "+
				"a dead FUSE mount on a parent directory? Unmount that one ('scanlockfs unmount DIR')", mp)
		}
		if !isFUSE(mi.fstype) {
			return exitf(ExitMount, "mount --recover: %s is a %s mount, not a FUSE mount: unmount it with umount(8) if it is yours", mp, mi.fstype)
		}
		lazy := false
		if os.Geteuid() == 0 {
			err = unmountSyscall(mp, false)
			if errors.Is(err, unix.EBUSY) {
				lazy, err = true, unmountSyscall(mp, true)
			}
		} else {
			err = unmountFusermount(mp, false)
			if errors.Is(err, unix.EBUSY) {
				lazy, err = true, unmountFusermount(mp, true)
			}
		}
		if err != nil {
			return exitf(ExitMount, "mount --recover: cannot unmount the dead mount on %s: %w", mp, err)
		}
		entry := log.WithFields(logrus.Fields{"mountpoint": mp, "fstype": mi.fstype})
		if lazy {
			entry.Warn("detached a dead mount that processes still use (they get ENOTCONN until they leave it); mounting again")
		} else {
			entry.Warn("unmounted a dead mount (its server had stopped without unmounting); mounting again")
		}
	}
	return exitf(ExitMount, "mount --recover: %s still has a dead mount after unmounting %d: unmount it by hand ('scanlockfs unmount --lazy %s')",
		mp, deadMountRounds, mp)
}

// liveFUSEMount returns the type of the FUSE mount on mp (resolved), or "".
func liveFUSEMount(mp string) string {
	mounts, err := readMountinfo()
	if err != nil {
		return ""
	}
	if mi := findMount(mounts, filepath.Clean(mp)); mi != nil && isFUSE(mi.fstype) {
		return mi.fstype
	}
	return ""
}
