package lockmgr

import (
	"sync"

	"golang.org/x/sys/unix"
)

// Waiting records.
//
// flock(2) has no queue, and our waiters poll with LOCK_NB, so the
// kernel's lock table shows nobody waiting: `scanlockfs status`, and the
// status view of a mount, could not see a `scanlockfs run` or a lockmgr
// program that waits for a scan. While a process of ours has requests
// waiting for a scan, it keeps a record of it: a POSIX (process-owned)
// read lock on the scan's file S.wait, on byte 0 while shared requests
// wait and on byte 1 while exclusive ones do. /proc/locks shows each
// with the process's pid, and the kernel drops it when the process dies,
// so a record never outlives its waiter. Read locks never conflict, so
// setting or clearing one never waits. A request only records once it
// really waits: an uncontended request costs nothing.
//
// POSIX locks belong to the process and are dropped when it closes any
// descriptor of the file: only this code opens S.wait, with one
// descriptor per scan, kept while a record is set.

// waitRecord is one scan's waiting record in this process.
type waitRecord struct {
	mu   sync.Mutex // guards everything below; a leaf
	n    [2]int     // waiting requests: [0] shared, [1] exclusive
	fd   int        // S.wait, while open is true
	open bool
}

// waitByte is the byte of S.wait recording waiters in mode.
func waitByte(mode Mode) int64 {
	if mode == Exclusive {
		return 1
	}
	return 0
}

// waiting counts delta more requests of this process waiting for scan f
// in mode, setting or clearing the record when the count leaves or
// reaches zero. Errors only cost visibility; they are logged at debug
// level.
func (f *lockFile) waiting(mode Mode, delta int) {
	r := &f.wrec
	r.mu.Lock()
	defer r.mu.Unlock()
	i := waitByte(mode)
	before := r.n[i]
	r.n[i] += delta
	if (before == 0) == (r.n[i] == 0) {
		return
	}
	if r.n[i] > 0 && !r.open {
		fd, _, err := f.b.dir.openFile(f.id+".wait", unix.O_RDWR, true, uint32(f.b.cfg.fileMode), true)
		if err != nil {
			f.b.log.WithError(err).WithField("scan", f.id).Debug("no waiting record")
			return
		}
		f.b.fixModeFD(fd)
		r.fd, r.open = fd, true
	}
	if !r.open {
		return
	}
	if r.n[0] == 0 && r.n[1] == 0 {
		unix.Close(r.fd) // drops both records
		r.open = false
		return
	}
	typ := int16(unix.F_UNLCK)
	if r.n[i] > 0 {
		typ = unix.F_RDLCK
	}
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: i, Len: 1}
	if err := unix.FcntlFlock(uintptr(r.fd), unix.F_SETLK, &lk); err != nil {
		f.b.log.WithError(err).WithField("scan", f.id).Debug("waiting record not set")
	}
}

// recordedWaiters returns the waiters other processes record for scan id
// (see above), from the lines of /proc/locks, for status.
func (m *Manager) recordedWaiters(id string, locks []procLock) []Waiter {
	var st unix.Stat_t
	if m.dir.lstat(id+".wait", &st) != nil || checkFile(&st) != nil {
		return nil
	}
	fid := fileID{st.Dev, st.Ino}
	var out []Waiter
	seen := map[procLock]bool{}
	for _, pl := range locks {
		if pl.file != fid || pl.kind != "POSIX" || pl.blocked || pl.pid == m.pid || pl.start > 1 || seen[pl] {
			continue
		}
		seen[pl] = true
		mode := Shared
		if pl.start == 1 {
			mode = Exclusive
		}
		out = append(out, Waiter{Mode: mode, PID: pl.pid, Command: procComm(pl.pid), User: procUser(pl.pid), Where: WhereProcess})
	}
	return out
}

// purgeWait removes the waiting-record file of scan id if it is ours
// (empty, one link) and no process records a waiter in it. Closing it
// drops this process's own records: there are none, as only scans not in
// use are purged.
func (m *Manager) purgeWait(id string, remove func(name string), skip func(name, why string)) {
	m.purgeUnlocked(id+".wait", "waiting record", unix.F_GETLK, 2, remove, skip)
}
