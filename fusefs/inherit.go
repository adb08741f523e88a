package fusefs

import (
	"strconv"

	"scanlockfs/internal/procfs"
	"scanlockfs/lockmgr"
)

// Holders' families.
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
//
// Likewise a process that holds the scan directly on SOURCE (its flock
// on SOURCE/.locks/S.lock: plantdb, flock(1), `scanlockfs run`), and
// every descendant of it, acts through the mount as that holder: an
// exclusive holder's family may do anything in the scan, a shared
// holder's family may read. The daemon cannot take the scan while the
// holder has it, so such requests are granted as loans under the
// holder's lock (lockmgr.Loan): mount users wait for them as for any
// holder, and the daemon takes the flock for them as soon as the holder
// releases it, so that files the family still has open stay covered.
//
// Both rules are only checked when a request would wait, so an
// uncontended open pays nothing (no /proc read).

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

// actingAs returns the owner that caller acts as on scan, and how it
// asks for the lock, when its request would wait: the owner of a
// descriptor it inherited, or the holder of scan on SOURCE whose family
// it is (a loan), or itself.
func (fsys *fileSystem) actingAs(req lockReq, scan string, caller lockmgr.Owner) (lockmgr.Owner, []lockmgr.AcquireOption) {
	// The holder on SOURCE first: a descendant that inherited a
	// descriptor of its family's loan is of that family too, and may
	// need a loan in a stronger mode than the family has here yet.
	if o, ok := fsys.underHolder(caller, scan, req.mode); ok {
		if fsys.debug {
			fsys.reqLog(req, scan, caller).WithField("as", o.String()).Debug("acting under the lock a holder's family has on SOURCE")
		}
		return o, []lockmgr.AcquireOption{lockmgr.Loan(o.PID)}
	}
	if others, self := fsys.heldByOthers(scan, caller.Key); others && !self {
		if o, ok := fsys.inheritedOwner(caller, scan); ok {
			if fsys.debug {
				fsys.reqLog(req, scan, caller).WithField("as", o.String()).Debug("acting as the owner of an inherited descriptor")
			}
			return o, nil
		}
	}
	return caller, nil
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
	if caller.PID <= 0 || fsys.mountpoint == "" || !fsys.hasScanFD(caller.PID, scan) {
		return caller, false
	}
	var found lockmgr.Owner
	ok := family(caller, func(p procfs.Stat) bool {
		if p.PID == caller.PID {
			return false
		}
		o, ok := fsys.holderByKey(scan, processFromStat(p).key)
		if ok {
			o.Note = caller.Note + " (inherited from pid " + strconv.Itoa(p.PID) + ", in pid " + strconv.Itoa(caller.PID) + ")"
			found = o
		}
		return ok
	})
	if !ok {
		return caller, false
	}
	return found, true
}

// underHolder returns the owner that caller acts as on scan when it, or
// an ancestor, holds scan directly on SOURCE (its flock on the lock file,
// as /proc/locks reports it: plantdb, flock(1), `scanlockfs run`) in a
// mode that covers mode: the holder, whose key is its process's (pid and
// start time), so that the holder and all its family are one owner
// here. Its lock is granted as a loan (lockmgr.Loan).
//
// The holder is matched by pid only: /proc/locks has no start time. It
// holds the lock now, so the pid names a live process, unless the
// holder exited while another process kept the locked descriptor (a
// child of flock(1)) and its pid went to another process since.
func (fsys *fileSystem) underHolder(caller lockmgr.Owner, scan string, mode lockmgr.Mode) (lockmgr.Owner, bool) {
	if caller.PID <= 0 {
		return caller, false
	}
	holds, err := fsys.mgr.ProcessHolds(scan)
	if err != nil || len(holds) == 0 {
		return caller, false
	}
	var line []procfs.Stat // the caller and its ancestors
	family(caller, func(p procfs.Stat) bool {
		line = append(line, p)
		return false
	})
	// The kernel produces /proc/locks a page at a time: while many locks
	// change, a line can be missed. A holder not found is looked for in
	// a new reading, twice.
	for attempt := 0; ; attempt++ {
		for _, p := range line {
			for _, h := range holds {
				if h.PID == p.PID && (h.Mode == lockmgr.Exclusive || mode == lockmgr.Shared) {
					return holderOwner(caller, p, h.Mode), true
				}
			}
		}
		if attempt == 2 || len(line) == 0 {
			return caller, false
		}
		if holds, err = fsys.mgr.ProcessHolds(scan); err != nil {
			return caller, false
		}
	}
}

// holderOwner is the owner that caller acts as under the lock process p
// holds on SOURCE in mode: p's, with the user of p's process, so that a
// family of several users is one owner.
func holderOwner(caller lockmgr.Owner, p procfs.Stat, mode lockmgr.Mode) lockmgr.Owner {
	user := caller.User
	if ps, err := procfs.ReadStatus(p.PID); err == nil {
		user = lockmgr.UserNameOf(ps.Uid[0])
	}
	return lockmgr.Owner{User: user, Key: processFromStat(p).key, PID: p.PID,
		Note: caller.Note + " (under the " + mode.String() + " lock pid " + strconv.Itoa(p.PID) +
			" holds on SOURCE, in pid " + strconv.Itoa(caller.PID) + ")"}
}

// family calls fn for caller's process and then for each of its
// ancestors, read from /proc/PID/stat, until fn returns true (then family
// does) or the chain ends. The caller is its process only if its pid
// still names it (its key) once read; an ancestor is one only if it
// started before its child: a later start time means the parent exited
// and its pid went to another process.
func family(caller lockmgr.Owner, fn func(procfs.Stat) bool) bool {
	st, err := procfs.ReadStat(caller.PID)
	if err != nil || processFromStat(st).key != caller.Key {
		return false
	}
	for range maxAncestors {
		if fn(st) {
			return true
		}
		if st.PPID <= 1 {
			return false
		}
		parent, err := procfs.ReadStat(st.PPID)
		if err != nil || parent.StartTime > st.StartTime {
			return false
		}
		st = parent
	}
	return false
}
