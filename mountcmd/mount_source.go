package mountcmd

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"scanlockfs/scanstatus"
)

// A scanlockfs mount point is not a scan database: its .locks is the
// virtual status view, and locking through it would lock the mount's own
// view. Commands that take SOURCE recognise a mount point given in its
// place: status and cleanup answer for the mount's SOURCE, mount refuses
// to stack a mount on another one.

// scanlockfsFSType is the type of our mounts in /proc/self/mountinfo.
const scanlockfsFSType = scanstatus.FSType

// scanlockfsMountOf returns the scanlockfs mount that dir (absolute) is
// or lies inside, from /proc/self/mountinfo, or nil. The innermost mount
// wins, as for path resolution.
func scanlockfsMountOf(dir string) *mountEntry {
	mounts, err := readMountinfo()
	if err != nil {
		return nil
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	var found *mountEntry
	for i := range mounts {
		m := &mounts[i]
		if m.point != dir && !strings.HasPrefix(dir, strings.TrimSuffix(m.point, "/")+"/") {
			continue
		}
		// A later mount on the same or a deeper point hides the earlier ones.
		if found == nil || len(m.point) >= len(found.point) {
			found = m
		}
	}
	if found == nil || found.fstype != scanlockfsFSType {
		return nil
	}
	return found
}

// sourceOfMountpoint returns the SOURCE of the scanlockfs mount whose
// mount point is dir, or "" if dir is not one.
func sourceOfMountpoint(dir string) string {
	m := scanlockfsMountOf(dir)
	if m == nil || m.source == "" {
		return ""
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	if m.point != dir {
		return ""
	}
	return m.source
}

// mountpointToSource returns the SOURCE of the scanlockfs mount whose
// mount point is dir, with a note on errw saying so, or dir itself: the
// user of status or cleanup who names the mount point means its SOURCE.
func mountpointToSource(errw io.Writer, cmd, dir string) string {
	src := sourceOfMountpoint(dir)
	if src == "" {
		return dir
	}
	fmt.Fprintf(errw, "scanlockfs: note: %s is a scanlockfs mount of %s: %s works on SOURCE, so this is 'scanlockfs %s %s'\n",
		printable(dir), printable(src), cmd, cmd, printable(src))
	return src
}

// notAMount refuses a SOURCE that is, or lies inside, a scanlockfs mount:
// its .locks is the read-only status view, so every lock, and with it
// every open, would fail with EIO.
func notAMount(source string) error {
	m := scanlockfsMountOf(source)
	if m == nil {
		return nil
	}
	if m.point == source || sourceOfMountpoint(source) != "" {
		return usageErrorf("SOURCE %s is a scanlockfs mount (of %s): mount the scan database itself: scanlockfs mount %s MOUNTPOINT",
			printable(source), printable(m.source), printable(m.source))
	}
	return usageErrorf("SOURCE %s is inside the scanlockfs mount %s (of %s): give a directory of the scan database itself, outside any scanlockfs mount",
		printable(source), printable(m.point), printable(m.source))
}
