package lockmgr

import (
	"path/filepath"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
)

// Fences close the last window of plantdb racing itself (foreign.go).
// A plantdb process opens S.lock and then flocks it: when another plantdb
// release unlinks the file between the two, the first one locks an
// orphan that nobody else can see until it holds it. /proc/locks shows
// nothing while it has the file merely open, so awaitOrphans, looking
// just then, lets our grant through; a moment later that process locks
// the orphan and believes it holds the scan while we do.
//
// So a grant that checks for orphans also looks for processes that have
// an orphaned S.lock of the scan open (/proc/PID/fd, every process), opens
// each such file itself through /proc/PID/fd/N and flocks it in the mode
// requested: a fence. While we hold the scan, such a process's flock on the
// orphan fails (plantdb's LOCK_NB attempt then closes it and tries the
// file named S.lock, which we hold); a fence already held by someone else
// is a holder of the scan, waited for like the orphans' holders. Our
// release closes the fences (nothing of ours keeps an orphan alive), and
// the next grant looks again, unless the last look found no orphan open
// anywhere and the lock file is the same: an orphan cannot gain new users
// (it has no name), so only a change of the lock file can make one. An
// orphan is fenced for at most fenceMax after it was first seen: other
// scanlockfs processes fence the same orphans, and the fences of two of
// them would otherwise keep each other's files in sight for ever.
const (
	// fenceMax bounds the life of a fence (see above). A plantdb
	// process stalled this long between its open and its flock is not
	// covered.
	fenceMax = 10 * time.Second
	// maxFences bounds the fences of one scan; the oldest are left out.
	maxFences = 64
)

// fence is our descriptor on an orphaned lock file of the scan.
type fence struct {
	fd   int
	file fileID
}

// fenceState is a scan's fences; only the goroutine in lock or unlock
// touches it (or a b.mu holder while the scan is unused).
type fenceState struct {
	clean  fileID               // the lock file when the last look found no orphan open
	fences []fence              // open during a grant and the hold that follows
	seen   map[fileID]time.Time // orphans found open by the last look, and since when
}

// lockFences fences the orphans other processes have open (after a look
// at every process, unless the last one found none and the lock file is
// the same) and locks the fences as we hold S.lock. It reports busy when
// another process holds one of them: the caller waits as for an orphan's
// holder.
func (f *lockFile) lockFences(mode Mode) (busy bool) {
	if f.fence.clean == f.fid {
		return false
	}
	f.sweepOrphans()
	how := unix.LOCK_SH // a plantdb reader may still share an orphan with our readers
	if mode == Exclusive {
		how = unix.LOCK_EX
	}
	for _, fc := range f.fence.fences {
		if ok, err := flockNB(fc.fd, how); err == nil && !ok {
			busy = true
		}
	}
	return busy
}

// unlockFences runs at our release, or when a grant is given back: it
// closes the fences, which drops their flocks.
func (f *lockFile) unlockFences() {
	for _, fc := range f.fence.fences {
		unix.Close(fc.fd)
	}
	f.fence.fences = nil
}

// closeFences closes every fence and forgets the last look.
func (f *lockFile) closeFences() {
	f.unlockFences()
	f.fence = fenceState{}
}

// sweepOrphans looks at every other process for descriptors on an
// orphaned lock file of the scan and brings the fences up to date.
func (f *lockFile) sweepOrphans() {
	pids, err := procfs.PIDs()
	if err != nil {
		return // not swept: the next grant looks again
	}
	now := time.Now()
	seen := map[fileID]time.Time{}
	where := map[fileID][2]int{} // an orphan's pid and descriptor, to open it
	var inDir func(path string) bool
	for _, pid := range pids {
		if pid == f.b.pid {
			continue
		}
		files, err := procfs.DeletedFiles(pid, f.id+".lock")
		if err != nil {
			continue // gone, or another user's process without privilege
		}
		for _, df := range files {
			id := fileID{dev: df.Dev, ino: df.Ino}
			if _, ok := seen[id]; ok {
				continue
			}
			if inDir == nil {
				inDir = f.b.inLockDir()
			}
			if !inDir(df.Path) {
				continue
			}
			first, ok := f.fence.seen[id]
			if !ok {
				first = now
			}
			seen[id], where[id] = first, [2]int{pid, df.FD}
		}
	}
	// Fences still open come from an earlier look of this grant (it
	// waited for a busy one): keep those still seen, open the others.
	kept := f.fence.fences[:0]
	have := map[fileID]bool{}
	for _, fc := range f.fence.fences {
		if first, found := seen[fc.file]; found && now.Sub(first) < fenceMax {
			kept = append(kept, fc)
			have[fc.file] = true
			continue
		}
		unix.Close(fc.fd)
	}
	young, fresh := 0, 0
	for id, first := range seen {
		if now.Sub(first) >= fenceMax {
			continue
		}
		young++
		if first == now {
			fresh++
		}
		if have[id] || len(kept) >= maxFences {
			continue
		}
		if fd, ok := openOrphan(where[id][0], where[id][1], id); ok {
			kept = append(kept, fence{fd: fd, file: id})
		}
	}
	if fresh > 0 {
		// Only a process outside scanlockfs unlinks a lock file.
		f.markForeign("a process has an orphaned lock file open")
		f.b.log.WithFields(logrus.Fields{"scan": f.id, "orphans": young}).Debug("fencing orphaned lock files that other processes have open")
	}
	f.fence.fences, f.fence.seen = kept, seen
	if young == 0 {
		f.fence.clean = f.fid
	}
}

// openOrphan opens the file that descriptor fd of process pid has open,
// if it is still the orphan id.
func openOrphan(pid, fd int, id fileID) (int, bool) {
	nfd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return -1, false
	}
	var st unix.Stat_t
	if unix.Fstat(nfd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || (fileID{dev: st.Dev, ino: st.Ino}) != id {
		unix.Close(nfd)
		return -1, false
	}
	return nfd, true
}

// inLockDir returns a test of whether a path names an entry of the lock
// directory (compared by the identity of its directory, so that another
// spelling of the same directory counts).
func (b *flockBackend) inLockDir() func(path string) bool {
	var dir unix.Stat_t
	if unix.Stat(b.lockDir, &dir) != nil {
		return func(string) bool { return false }
	}
	return func(path string) bool {
		var st unix.Stat_t
		return unix.Stat(filepath.Dir(path), &st) == nil && st.Dev == dir.Dev && st.Ino == dir.Ino
	}
}
