package fusefs

import (
	"strconv"

	"scanlockfs/internal/procfs"
	"scanlockfs/lockmgr"
)

// Inherited descriptors.
//
// A process that inherited an open file of a scan from the process that
// opened it (fork, or a shell that opens a redirection before it starts
// the command: dash runs `cat a > b` as "open b, vfork, exec cat") uses
// the scan through that descriptor, whose lease belongs to the opener.
// When such a process opens more files of the scan, it acts as the
// opener: otherwise `sh -c 'cat scan/a > scan/b'` would wait for its own
// shell until the timeout. The rule needs both facts: the process holds
// a descriptor into the scan in this mount, and an ancestor of it (the
// very process: pid and start time) is a lock owner of the scan here.
// It is only checked when the scan is held by another owner of this
// mount, so an uncontended open pays nothing.

// maxAncestors bounds the walk up the process tree.
const maxAncestors = 32

// heldByOthers reports whether an owner other than key holds scan here,
// and whether key holds it itself.
func (fsys *fileSystem) heldByOthers(scan, key string) (others, self bool) {
	return fsys.mgr.HeldBy(scan, key)
}

// holderByKey returns the owner of this mount with key that holds scan.
func (fsys *fileSystem) holderByKey(scan, key string) (lockmgr.Owner, bool) {
	for _, o := range fsys.mgr.Holders(scan) {
		if o.Key == key {
			return o, true
		}
	}
	return lockmgr.Owner{}, false
}

// inheritedOwner returns the owner that caller acts as on scan: an
// ancestor's, if caller holds a descriptor into the scan and an ancestor
// holds the scan here (see above).
//
// An ancestor is matched by pid and start time (its owner key), read
// from /proc/PID/stat up the caller's parent chain, so that it is the
// very process that took the lease: a process that got the pid of a
// holder that exited is not it, and neither are its children. A lease
// whose opener exited while a child keeps the descriptor stays held (the
// kernel keeps the open file) but nobody can act as its owner any more.
func (fsys *fileSystem) inheritedOwner(caller lockmgr.Owner, scan string) (lockmgr.Owner, bool) {
	if caller.PID <= 0 || fsys.mountpoint == "" || !procfs.HasFDUnder(caller.PID, fsys.mountpoint+"/"+scan) {
		return caller, false
	}
	// The descriptors were the caller's if its pid still names it after
	// they were read.
	st, err := procfs.ReadStat(caller.PID)
	if err != nil || processFromStat(st).key != caller.Key {
		return caller, false
	}
	for range maxAncestors {
		if st.PPID <= 1 {
			break
		}
		parent, err := procfs.ReadStat(st.PPID)
		// A parent starts before its children: a later start time means
		// the parent exited and its pid went to another process.
		if err != nil || parent.StartTime > st.StartTime {
			break
		}
		if o, ok := fsys.holderByKey(scan, processFromStat(parent).key); ok {
			o.Note = caller.Note + " (inherited from pid " + strconv.Itoa(parent.PID) + ", in pid " + strconv.Itoa(caller.PID) + ")"
			return o, true
		}
		st = parent
	}
	return caller, false
}
