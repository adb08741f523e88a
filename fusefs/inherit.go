package fusefs

import (
	"os"
	"strconv"
	"strings"

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
// a descriptor into the scan in this mount, and an ancestor of it is a
// lock owner of the scan here. It is only checked when the scan is held
// by another owner of this mount, so an uncontended open pays nothing.

// maxAncestors bounds the walk up the process tree.
const maxAncestors = 32

// holding records which owners of this mount hold leases on which scans,
// for the inheritance rule. It is guarded by fileSystem.mu, which is
// never held while waiting for a lock.
type holding map[string]map[string]*heldBy // scan -> owner key -> holder

type heldBy struct {
	owner lockmgr.Owner
	n     int
}

func (fsys *fileSystem) track(l *lockmgr.Lease) {
	o := l.Owner()
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	m := fsys.holders[l.ScanID()]
	if m == nil {
		m = map[string]*heldBy{}
		fsys.holders[l.ScanID()] = m
	}
	h := m[o.Key]
	if h == nil {
		h = &heldBy{owner: o}
		m[o.Key] = h
	}
	h.n++
}

func (fsys *fileSystem) untrack(l *lockmgr.Lease) {
	o := l.Owner()
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	m := fsys.holders[l.ScanID()]
	if h := m[o.Key]; h != nil {
		if h.n--; h.n <= 0 {
			delete(m, o.Key)
		}
	}
	if len(m) == 0 {
		delete(fsys.holders, l.ScanID())
	}
}

// heldByOthers reports whether an owner other than key holds scan here,
// and whether key holds it itself.
func (fsys *fileSystem) heldByOthers(scan, key string) (others, self bool) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	m := fsys.holders[scan]
	_, self = m[key]
	return len(m) > 1 || (len(m) == 1 && !self), self
}

// holderByPID returns the owner of this mount holding scan whose process
// is pid.
func (fsys *fileSystem) holderByPID(scan string, pid int) (lockmgr.Owner, bool) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	for _, h := range fsys.holders[scan] {
		if h.owner.PID == pid {
			return h.owner, true
		}
	}
	return lockmgr.Owner{}, false
}

// inheritedOwner returns the owner that caller acts as on scan: an
// ancestor's, if caller holds a descriptor into the scan and an ancestor
// holds the scan here (see above).
func (fsys *fileSystem) inheritedOwner(caller lockmgr.Owner, scan string) (lockmgr.Owner, bool) {
	if caller.PID <= 0 || fsys.mountpoint == "" || !hasFDUnder(caller.PID, fsys.mountpoint+"/"+scan) {
		return caller, false
	}
	pid := caller.PID
	for range maxAncestors {
		ppid, ok := parentOf(pid)
		if !ok || ppid <= 1 {
			break
		}
		if o, ok := fsys.holderByPID(scan, ppid); ok {
			o.Note = caller.Note + " (inherited from pid " + strconv.Itoa(ppid) + ", in pid " + strconv.Itoa(caller.PID) + ")"
			return o, true
		}
		pid = ppid
	}
	return caller, false
}

// hasFDUnder reports whether process pid has a descriptor open on dir or
// on a file below it.
func hasFDUnder(pid int, dir string) bool {
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		target, err := os.Readlink(fdDir + e.Name())
		if err != nil {
			continue
		}
		// A file unlinked while open reads "PATH (deleted)".
		target = strings.TrimSuffix(target, " (deleted)")
		if target == dir || strings.HasPrefix(target, dir+"/") {
			return true
		}
	}
	return false
}

// parentOf returns the parent process of pid, from /proc/PID/stat.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	return parsePPid(string(b))
}

// parsePPid reads the ppid field of /proc/PID/stat: "PID (COMM) STATE
// PPID ...", where COMM may itself contain spaces and parentheses.
func parsePPid(stat string) (int, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil && ppid > 0
}
