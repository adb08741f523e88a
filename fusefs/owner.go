package fusefs

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
	"scanlockfs/lockmgr"
)

// anonSeq numbers requests whose process cannot be told: those sent by
// the kernel itself (pid 0) and those of a process that is gone. Each
// gets an owner of its own, so that two of them never pass for one
// reentrant owner.
var anonSeq atomic.Uint64

func anonKey() string { return "anon:" + strconv.FormatUint(anonSeq.Add(1), 10) }

// callerOwner returns the lock owner for the process that made the FUSE
// request in ctx. FUSE reports the calling thread; the owner is its
// process, so that every thread of a program shares its locks (as
// plantdb's per-process counts do). The key is the process's pid and
// start time (lockmgr.ProcessKey): a process that later gets the same
// pid is another owner. note is shown in lock status.
func callerOwner(ctx context.Context, note string) lockmgr.Owner {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Pid == 0 {
		return lockmgr.Owner{User: "kernel", Key: anonKey(), Note: note}
	}
	o := lockmgr.Owner{User: lockmgr.UserNameOf(c.Uid), PID: int(c.Pid), Note: note}
	if p, ok := processOf(int(c.Pid)); ok {
		o.PID, o.Key = p.pid, p.key
	} else {
		// Gone already (the request is being abandoned), or /proc does
		// not show its start time: an owner that shares nothing.
		o.Key = anonKey()
	}
	return o
}

// process is a process identified for good: its id and its owner key
// (pid and start time).
type process struct {
	pid int
	key string
}

func processFromStat(st procfs.Stat) process {
	return process{pid: st.PID, key: lockmgr.ProcessKey(st.PID, st.StartTime)}
}

// pidfdOpenWorks is cleared when pidfd_open(2) is missing (Linux < 5.3)
// or forbidden, so that processOf stops trying it.
var pidfdOpenWorks atomic.Bool

func init() { pidfdOpenWorks.Store(true) }

// processOf returns the process of thread tid.
//
// It is on the path of every open, so it avoids /proc when it can:
// pidfd_open(tid, 0) succeeds only for a thread-group leader, which is
// what single-threaded programs (cat, cp, sed, tar, shells) always are.
// The pidfd is kept with the process's start time (leaderCache), so that
// the leader's next requests cost one pidfd_send_signal(0): while the
// pidfd shows the process alive, the pid still names the process whose
// start time was read. Other threads (every Go program's requests come
// from several) get a thread pidfd (PIDFD_THREAD, Linux 6.9) kept the
// same way (threads), so that their next requests cost one
// pidfd_send_signal(0) too: a live thread's id is not reused, and its
// process exists. The first request of a thread reads /proc/TID/status
// once (about 20 µs). Where thread pidfds are missing, threads are looked
// up in a cache checked with one stat of /proc (about 2 µs), then their
// leader as above. Without pidfds, every request reads /proc/PID/stat
// (about 20 µs). ok is false if the process is gone.
func processOf(tid int) (p process, ok bool) {
	if tid <= 0 {
		return process{}, false
	}
	if pidfdOpenWorks.Load() {
		if p, ok := threads.cached(tid); ok {
			return p, true
		}
		p, err := leaders.lookup(tid)
		switch {
		case err == nil:
			return p, true
		case errors.Is(err, errNotLeader):
			return threadProcess(tid)
		case !errors.Is(err, errNoPidfd):
			return process{}, false // gone
		}
	}
	st, err := procfs.ReadStat(tgidOf(tid))
	if err != nil {
		return process{}, false
	}
	return processFromStat(st), true
}

var (
	errNotLeader = errors.New("not a thread-group leader")
	errNoPidfd   = errors.New("pidfd_open does not work here")
	errGone      = errors.New("process gone")
)

// leaderCache keeps a pidfd for each thread-group leader that made a
// request, with the process's owner key. A pidfd names one process for
// good: while that process exists (a zombie included), its id cannot be
// reused, so a live pidfd proves that the id still names the process
// whose start time was read.
type leaderCache struct {
	mu sync.RWMutex // read side while a pidfd is used, so it is not closed meanwhile
	m  map[int]leader
}

type leader struct {
	fd int // pidfd
	p  process
}

var leaders leaderCache

// maxLeaderCache bounds the pidfds kept open.
const maxLeaderCache = 256

// lookup returns the process whose leader is tid: from the cache while
// its pidfd shows it alive (an entry whose process is gone is dropped),
// else by opening a pidfd and reading its start time. Errors: errGone,
// errNotLeader, errNoPidfd.
func (c *leaderCache) lookup(tid int) (process, error) {
	if p, ok := c.cached(tid); ok {
		return p, nil
	}
	fd, err := unix.PidfdOpen(tid, 0)
	switch {
	case err == nil:
	case errors.Is(err, unix.ESRCH):
		return process{}, errGone
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
		// Not a leader (EINVAL before Linux 6.9, ENOENT since).
		return process{}, errNotLeader
	default:
		// ENOSYS, EPERM (seccomp)...: never try again.
		pidfdOpenWorks.Store(false)
		return process{}, errNoPidfd
	}
	st, err := procfs.ReadStat(tid)
	// The stat read is of the pidfd's process only if that process
	// still exists after the read: then the pid was not reused between.
	if err != nil || !pidfdAlive(fd) {
		unix.Close(fd)
		return process{}, errGone
	}
	p := processFromStat(st)
	c.add(tid, leader{fd: fd, p: p})
	return p, nil
}

// drop removes tid's entry if it still has pidfd fd, and closes it.
func (c *leaderCache) drop(tid, fd int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.m[tid]; ok && cur.fd == fd {
		delete(c.m, tid)
		unix.Close(fd)
	}
}

// add keeps e, or closes its pidfd.
func (c *leaderCache) add(tid int, e leader) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[tid]; ok {
		unix.Close(e.fd) // a concurrent request cached it first
		return
	}
	if c.m == nil || len(c.m) >= maxLeaderCache {
		for _, old := range c.m {
			unix.Close(old.fd)
		}
		c.m = make(map[int]leader)
	}
	c.m[tid] = e
}

// cached returns the process of tid if tid is cached and its pidfd shows
// it alive; an entry whose process is gone is dropped.
func (c *leaderCache) cached(tid int) (process, bool) {
	c.mu.RLock()
	e, ok := c.m[tid]
	alive := ok && pidfdAlive(e.fd)
	c.mu.RUnlock()
	if ok && !alive {
		c.drop(tid, e.fd)
	}
	return e.p, alive
}

// threads keeps a thread pidfd (PIDFD_THREAD) for each thread that is
// not a leader and made a request, with its process.
var threads leaderCache

// threadPidfdsWork is cleared when pidfd_open(2) refuses PIDFD_THREAD
// (Linux < 6.9), so that threadProcess stops trying it.
var threadPidfdsWork atomic.Bool

func init() { threadPidfdsWork.Store(true) }

// pidfdThread is PIDFD_THREAD: a pidfd of the thread itself, not of
// its thread group.
const pidfdThread = unix.O_EXCL

// threadProcess returns the process of tid, a thread that is not its
// process's leader, and caches it (threads) with a pidfd of the thread:
// the thread's process is read (/proc/TID/status, then its leader) only
// if the pidfd still shows the thread alive afterwards, so the id was
// not reused in between. Without thread pidfds, it maps tid by /proc
// (tgidOf) on each request.
func threadProcess(tid int) (process, bool) {
	fd := -1
	if threadPidfdsWork.Load() {
		var err error
		switch fd, err = unix.PidfdOpen(tid, pidfdThread); {
		case err == nil:
		case errors.Is(err, unix.ESRCH):
			return process{}, false
		case errors.Is(err, unix.EINVAL): // the flag is unknown
			threadPidfdsWork.Store(false)
			fd = -1
		default: // EMFILE...: /proc this time
			fd = -1
		}
	}
	tgid := tgidOf(tid)
	if tgid == tid {
		if fd >= 0 {
			unix.Close(fd)
		}
		return process{}, false // gone, or /proc does not tell
	}
	p, err := leaders.lookup(tgid)
	if fd < 0 {
		return p, err == nil
	}
	if err != nil || !pidfdAlive(fd) {
		unix.Close(fd)
		return process{}, false
	}
	threads.add(tid, leader{fd: fd, p: p})
	return p, true
}

// holds reports whether tid is a cached leader that still exists.
func (c *leaderCache) holds(tid int) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.m[tid]
	return ok && pidfdAlive(e.fd)
}

// pidfdAlive reports whether the process of a pidfd still exists. Signal
// 0 only checks; EPERM (another user's process) means it exists.
func pidfdAlive(fd int) bool {
	err := unix.PidfdSendSignal(fd, 0, nil, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// threadCache maps thread ids of multi-threaded callers to their process,
// so that they pay a stat of /proc/TGID/task/TID (a few µs) instead of
// reading /proc/TID/status (about 20 µs) on each open.
var (
	threadCache     sync.Map // int -> int
	threadCacheSize atomic.Int64
)

const maxThreadCache = 4096

// tgidOf maps a thread id to the id of its process (thread group), tid
// itself if it cannot be told.
func tgidOf(tid int) int {
	if v, ok := threadCache.Load(tid); ok {
		// Still valid if the thread is still in that process: a reused
		// thread id in another process is not in its task directory.
		tgid, _ := v.(int)
		if procfs.HasThread(tgid, tid) {
			return tgid
		}
		threadCache.Delete(tid)
	}
	st, err := procfs.ReadStatus(tid)
	if err != nil {
		return tid
	}
	if st.Tgid != tid {
		if threadCacheSize.Add(1) > maxThreadCache {
			threadCache.Clear()
			threadCacheSize.Store(1)
		}
		threadCache.Store(tid, st.Tgid)
	}
	return st.Tgid
}
