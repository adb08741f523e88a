package lockmgr

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
)

// Processes outside scanlockfs on the same lock files: plantdb's
// ScanLockManager. plantdb unlinks S.lock when it releases, so when two
// plantdb processes share a scan, one of them can end up holding a flock
// on a file that has no name any more (an orphan) while everybody else
// locks the file now named S.lock. Nothing on the current file shows that
// holder; /proc/locks and /proc/PID/fd do. So, for a scan where foreign
// use is known (or cannot be ruled out), the flock backend
//
//   - counts a process that holds an orphaned S.lock in a conflicting mode
//     as a holder of S: a fresh grant keeps its flock (its place) and waits
//     until that holder is gone (awaitOrphans), and the race is logged once
//     per scan with the pids;
//   - takes even a shared request with LOCK_EX, because a plantdb reader
//     that shared our flock would unlink our lock file when it leaves and
//     a plantdb writer would then lock a new one while our readers read;
//     for the same reason a grant on which S.info shows a live plantdb
//     reader sharing our file is given back and retried;
//   - lets no new reader join this process's hold once the lock file was
//     replaced (the hold protects nothing new) or a foreign process tried
//     to lock it (so that it gets its turn);
//   - leaves the scan free at hand-over for a foreign poller seen waiting,
//     until its next attempt or lingerMax (linger).
//
// The signs of foreign use cost no system call of their own: the stat
// of the lock file after each grant and before each release (the path
// checks) gives its inode and its modification time (and ctime), which
// plantdb's O_CREAT|O_WRONLY|O_TRUNC open sets on every attempt and ours
// never change (a lock file opened anew with a recent one costs a statx,
// to tell a truncation from the file's creation); the S.info that
// awaitPlantdbRelease reads names its writer. In foreign mode a reader
// joining our hold costs a stat, a grant the orphan check. A process
// that sees none of them never reads /proc/locks on the way to a grant,
// except at the first open of a scan's lock file in its first minute or
// within a minute of a foreign sign on any scan (it cannot know what
// happened to that file before it looked).

const (
	// foreignTTL is how long one sign of a foreign process keeps a scan
	// in foreign mode.
	foreignTTL = time.Minute
	// foreignRecent: a lock file truncated this shortly before we open
	// it is being tried by a plantdb process right now.
	foreignRecent = 2 * time.Second
	mtimeSlack    = 20 * time.Millisecond
	// plantdbPoll is plantdb's sleep between two attempts.
	plantdbPoll = 100 * time.Millisecond
	// lingerMax bounds a linger, counted from the foreign attempt seen:
	// the poller's next attempt is due plantdbPoll after it.
	lingerMax = plantdbPoll + plantdbPoll/2
	// lingerGrace bounds the time left to a poller between its open
	// (seen by the modification time) and its flock (seen by its S.info).
	lingerGrace = 20 * time.Millisecond
	// lingerTick and orphanPollMax pace the waits of this file: they
	// only run while a foreign process is known to be there.
	lingerTick    = time.Millisecond
	orphanPollMax = 10 * time.Millisecond
)

// foreignState is what this process knows of foreign use of one scan.
type foreignState struct {
	signs atomic.Uint64 // signs of foreign use seen (markForeign), ever

	mu         sync.Mutex // a leaf
	until      time.Time  // foreign use known until then
	lastID     fileID     // the lock file last opened; survives closeFile
	fresh      bool       // the lock file was opened anew since the last orphan check
	grantMtime int64      // the lock file's mtime (ns) when this process last got it; 0 if unknown
	pollAt     int64      // mtime of a foreign attempt seen during our hold, awaiting a linger; 0 if none

	// cleared lists the flocks of other processes found not to be on an
	// orphaned lock file of the scan, for as long as /proc/locks shows
	// them: a file that had another name, or still had its name, when it
	// was looked at never becomes an orphan of the scan, so its holder's
	// descriptors are not read again. Only the goroutine in lock touches
	// it.
	cleared map[heldFile]bool
	// orphanPIDs are the holders of orphaned lock files seen and not yet
	// seen letting go (only the goroutine in lock touches it).
	orphanPIDs map[int]bool
}

// heldFile is one flock of /proc/locks: who holds which file.
type heldFile struct {
	pid  int
	file fileID
}

// foreignKnown reports whether foreign use of the scan is known.
func (f *lockFile) foreignKnown() bool {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return time.Now().Before(f.fs.until)
}

// markForeign records a sign of foreign use of the scan.
func (f *lockFile) markForeign(why string) {
	now := time.Now()
	f.fs.mu.Lock()
	first := !now.Before(f.fs.until)
	f.fs.until = now.Add(foreignTTL)
	f.fs.mu.Unlock()
	f.fs.signs.Add(1)
	f.b.foreignAt.Store(now.UnixNano())
	if first {
		f.b.log.WithFields(logrus.Fields{"scan": f.id, "why": why}).Debug("a process outside scanlockfs uses the scan")
	}
}

// noteOpened runs when the lock file was opened (f.fd; st is its status,
// the open began at before): a file other than the one we had means
// somebody removed or replaced ours; a modification time shortly before
// the open and later than the file's creation (none of ours changes it
// after creating the file) is plantdb's truncating open, an attempt of a
// plantdb process that is active now.
func (f *lockFile) noteOpened(id fileID, st *unix.Stat_t, before time.Time) {
	f.fs.mu.Lock()
	replaced := !f.fs.lastID.zero() && f.fs.lastID != id
	f.fs.lastID, f.fs.fresh, f.fs.grantMtime = id, true, st.Mtim.Nano()
	f.fs.mu.Unlock()
	m := time.Unix(0, st.Mtim.Nano())
	// The kernel stamps files with a coarse clock: a file created by this
	// very open may seem a few milliseconds older than before.
	recent := m.Before(before.Add(-mtimeSlack)) && before.Sub(m) < foreignRecent && truncatedSinceCreated(f.fd, st)
	switch {
	case replaced:
		f.markForeign("the lock file was replaced")
	case recent:
		f.markForeign("the lock file was truncated just now (plantdb's open)")
	}
}

// truncatedSinceCreated reports whether the file fd was modified after it
// was created; false where the file system keeps no creation time.
func truncatedSinceCreated(fd int, st *unix.Stat_t) bool {
	var stx unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &stx) != nil || stx.Mask&unix.STATX_BTIME == 0 {
		return false
	}
	return st.Mtim.Nano() > stx.Btime.Sec*1e9+int64(stx.Btime.Nsec)
}

// needOrphanCheck reports whether a grant must look for orphaned lock
// files (see the top of this file) and clears the fresh mark.
func (f *lockFile) needOrphanCheck() bool {
	f.fs.mu.Lock()
	fresh := f.fs.fresh
	f.fs.fresh = false
	known := time.Now().Before(f.fs.until)
	f.fs.mu.Unlock()
	if known {
		return true
	}
	if !fresh {
		return false
	}
	b := f.b
	return time.Since(b.started) < foreignTTL || time.Since(time.Unix(0, b.foreignAt.Load())) < foreignTTL
}

// noteGrant records the lock file's status found by the path check after
// a grant. A modification time changed since we last looked is a foreign
// attempt while we did not hold the scan.
func (f *lockFile) noteGrant(st *unix.Stat_t) {
	m := st.Mtim.Nano()
	f.fs.mu.Lock()
	changed := f.fs.grantMtime != 0 && f.fs.grantMtime != m
	f.fs.grantMtime = m
	f.fs.mu.Unlock()
	if changed {
		f.markForeign("a foreign process opened the lock file")
	}
}

// noteForeignAttempt compares the lock file's status with the one at our
// grant: a new modification time is a foreign open with O_TRUNC, an
// attempt that failed while we held the scan. It reports whether there
// was one.
func (f *lockFile) noteForeignAttempt(st *unix.Stat_t) bool {
	m := st.Mtim.Nano()
	f.fs.mu.Lock()
	seen := f.fs.grantMtime != 0 && m != f.fs.grantMtime
	if seen {
		f.fs.pollAt, f.fs.grantMtime = m, m
	}
	f.fs.mu.Unlock()
	if seen {
		f.markForeign("a foreign process tried to lock the scan")
	}
	return seen
}

// joinable reports whether a new reader of this process may join its
// hold: not once the lock file lost its name (the hold protects nothing
// new) or a foreign process tried to lock it (it gets its turn once our
// readers leave). It only looks at the file while foreign use is known.
func (f *lockFile) joinable() bool {
	if !f.foreignKnown() {
		return true
	}
	f.fs.mu.Lock()
	id := f.fs.lastID // f.fid belongs to the goroutine in lock or unlock
	f.fs.mu.Unlock()
	var st unix.Stat_t
	if f.b.dir.nameStat(f.lockRel, f.lockPath, &st) != nil || (fileID{dev: st.Dev, ino: st.Ino}) != id {
		return false
	}
	return !f.noteForeignAttempt(&st)
}

// linger leaves the scan free for a foreign poller seen waiting during
// our last hold: until its next attempt (the lock file's modification
// time changes again) and lingerGrace more, or lingerMax after the
// attempt seen. It runs before this process locks the scan again.
func (f *lockFile) linger(ctx context.Context) {
	f.fs.mu.Lock()
	at := f.fs.pollAt
	f.fs.pollAt = 0
	f.fs.mu.Unlock()
	if at == 0 {
		return
	}
	deadline := time.Unix(0, at).Add(lingerMax)
	start := time.Now()
	for time.Now().Before(deadline) {
		var st unix.Stat_t
		if f.b.dir.nameStat(f.lockRel, f.lockPath, &st) != nil || st.Mtim.Nano() != at {
			f.awaitForeignGrant(ctx, st.Mtim.Nano())
			break
		}
		if !f.sleep(ctx, lingerTick) {
			return
		}
	}
	f.b.log.WithFields(logrus.Fields{"scan": f.id, "lingered": time.Since(start)}).Debug("left the scan free for a foreign poller")
}

// awaitForeignGrant runs once a foreign attempt opened the lock file
// (at the modification time since): it waits, at most lingerGrace, until
// the attempt holds the scan, which plantdb shows by writing S.info after
// its flock. An attempt that failed (another process held the scan)
// costs the whole grace.
func (f *lockFile) awaitForeignGrant(ctx context.Context, since int64) {
	end := time.Now().Add(lingerGrace)
	for time.Now().Before(end) {
		var st unix.Stat_t
		if f.b.dir.lstat(f.id+".info", &st) == nil && st.Mtim.Nano() >= since {
			return
		}
		if !f.sleep(ctx, lingerTick/4) {
			return
		}
	}
}

// pause is sleep for a wait that fails when it ends early: ctx's error,
// or ErrClosed.
func (f *lockFile) pause(ctx context.Context, d time.Duration) error {
	if f.sleep(ctx, d) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return ErrClosed
}

// sleep waits d; false if ctx or the backend ended first.
func (f *lockFile) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-f.b.closeCh:
		return false
	case <-t.C:
		return true
	}
}

// orphanHolder is a process holding a lock file of the scan that has no
// name any more.
type orphanHolder struct {
	pid  int
	mode Mode
}

// awaitOrphans runs after a grant on f (still named, flock held in
// mode): while another process holds an orphaned lock file of the scan
// in a mode that conflicts with mode, it waits, keeping the flock, until
// that holder is gone or ctx ends (with try it does not wait). /proc
// that cannot be read (another user's process without privilege) hides
// a holder: then it does not wait. It returns the holders seen (now or
// by an earlier check) that let go of their orphan since: each is in its
// release, about to unlink S.lock.
func (f *lockFile) awaitOrphans(ctx context.Context, mode Mode, try bool) ([]int, error) {
	delay := lingerTick
	for {
		orphans, holders := f.findOrphans()
		var released []int
		for pid := range f.fs.orphanPIDs {
			if !slices.ContainsFunc(orphans, func(o orphanHolder) bool { return o.pid == pid }) {
				released = append(released, pid)
				delete(f.fs.orphanPIDs, pid)
			}
		}
		if len(orphans) == 0 {
			return released, nil
		}
		// Any orphan is plantdb racing itself; only a conflicting one is
		// waited for.
		f.markForeign("a process holds an orphaned lock file")
		f.b.logRace(f.id, orphans, holders)
		if f.fs.orphanPIDs == nil {
			f.fs.orphanPIDs = map[int]bool{}
		}
		for _, o := range orphans {
			f.fs.orphanPIDs[o.pid] = true
		}
		orphans = slices.DeleteFunc(orphans, func(o orphanHolder) bool { return mode == Shared && o.mode == Shared })
		if len(orphans) == 0 {
			return released, nil
		}
		if try {
			return nil, fmt.Errorf("%w: scan %s is held by process %d through a lock file that was unlinked", ErrWouldBlock, f.id, orphans[0].pid)
		}
		if err := f.pause(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(delay*2, orphanPollMax)
	}
}

// guardOrphans is the part of confirm that deals with orphaned lock
// files: it waits for their holders (awaitOrphans) and fences the
// orphans that other processes have open (fence.go), keeping our flock.
// false: the grant was given back, start over.
func (f *lockFile) guardOrphans(ctx context.Context, mode Mode, try bool) (bool, error) {
	for {
		// In the mode requested: a plantdb reader on an orphan may share
		// with our readers; its release then unlinks our file, which the
		// name guard (nameguard.go) catches.
		released, err := f.awaitOrphans(ctx, mode, try)
		if err != nil {
			f.dropFlock()
			return false, err
		}
		if len(released) > 0 && !f.keepsName(ctx, released) {
			f.closeFile() // unlinked by the orphan's holder's release
			f.b.stats.replaced.Add(1)
			return false, nil
		}
		busy := f.lockFences(mode)
		if !f.kernelEx && f.foreignKnown() {
			f.dropFlock() // an orphan just made foreign use known: LOCK_EX now
			return false, nil
		}
		if !busy {
			return true, nil
		}
		// Another process locked an orphan since awaitOrphans looked.
		if try {
			f.dropFlock()
			return false, fmt.Errorf("%w: scan %s is held by another process through a lock file that was unlinked", ErrWouldBlock, f.id)
		}
		if err := f.pause(ctx, lingerTick); err != nil {
			f.dropFlock()
			return false, err
		}
	}
}

// keepsName runs after holders of orphaned lock files (pids) let go:
// plantdb's release goes on with unlink(S.lock), which then names the
// file we kept our place with. It waits until that happened (false: our
// file lost its name, start over) or the holders are gone, at most
// plantdbReleaseWait (true: still ours).
func (f *lockFile) keepsName(ctx context.Context, pids []int) bool {
	deadline := time.Now().Add(plantdbReleaseWait)
	for {
		if same, err := f.stillNamed(); err == nil && !same {
			return false
		}
		if !slices.ContainsFunc(pids, processAlive) || !time.Now().Before(deadline) || !f.sleep(ctx, lingerTick) {
			same, err := f.stillNamed()
			return err != nil || same
		}
	}
}

// findOrphans returns the processes other than this one that hold an
// orphaned lock file of the scan, and the pids of the other holders of
// the current file.
func (f *lockFile) findOrphans() (orphans []orphanHolder, holders []int) {
	locks, err := readProcLocks()
	if err != nil {
		return nil, nil
	}
	var inDir func(path string) bool
	seen := map[int]bool{}
	cleared := map[heldFile]bool{}
	// A file still named S.lock could become an orphan later: the cache
	// is only kept while the name is that of our file, which no entry
	// of the cache is.
	if same, err := f.stillNamed(); err == nil && same {
		defer func() { f.fs.cleared = cleared }()
	} else {
		defer func() { f.fs.cleared = nil }()
	}
	for _, pl := range locks {
		if pl.kind != "FLOCK" || pl.blocked || pl.pid == f.b.pid || pl.pid <= 0 {
			continue
		}
		if pl.file == f.fid {
			holders = append(holders, pl.pid)
			continue
		}
		key := heldFile{pid: pl.pid, file: pl.file}
		if pl.file.dev != f.fid.dev || seen[pl.pid] {
			continue
		}
		if f.fs.cleared[key] {
			cleared[key] = true
			continue
		}
		files, err := procfs.DeletedFiles(pl.pid, f.id+".lock")
		if err != nil {
			continue
		}
		cleared[key] = true
		for _, df := range files {
			if (fileID{dev: df.Dev, ino: df.Ino}) != pl.file {
				continue
			}
			if inDir == nil {
				inDir = f.b.inLockDir()
			}
			if inDir(df.Path) {
				seen[pl.pid] = true
				delete(cleared, key)
				orphans = append(orphans, orphanHolder{pid: pl.pid, mode: pl.mode})
				break
			}
		}
	}
	return orphans, holders
}

// logRace logs, once per scan and process, that processes hold a lock
// file of the scan that was unlinked under them: plantdb's release
// unlinks S.lock while another plantdb process may hold it, and the two
// then exclude nobody.
func (b *flockBackend) logRace(id string, orphans []orphanHolder, holders []int) {
	b.mu.Lock()
	done := b.raceLogged[id]
	b.raceLogged[id] = true
	b.mu.Unlock()
	if done {
		return
	}
	pids := make([]int, 0, len(orphans))
	comms := make([]string, 0, len(orphans))
	for _, o := range orphans {
		pids = append(pids, o.pid)
		comms = append(comms, procComm(o.pid))
	}
	sort.Ints(holders)
	b.log.WithFields(logrus.Fields{"scan": id, "orphan_pids": pids, "orphan_commands": comms, "holder_pids": holders}).Warn(
		"processes hold a lock file of the scan that another process unlinked (plantdb's release unlinks S.lock even while " +
			"another plantdb process holds it, and then they exclude nobody); scanlockfs waits for them, but plantdb processes " +
			"can overlap each other: remove the unlink of the lock file from plantdb's release (ScanLockManager._release_lock)")
}
