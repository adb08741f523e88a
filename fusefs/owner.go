package fusefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"scanlockfs/lockmgr"
)

// anonSeq numbers requests that carry no process (pid 0: sent by the
// kernel itself). Each gets an owner of its own, so that two of them
// never pass for one reentrant owner.
var anonSeq atomic.Uint64

// callerOwner returns the lock owner for the process that made the FUSE
// request in ctx. FUSE reports the calling thread; the owner is its
// process, so that every thread of a program shares its locks (as
// plantdb's per-process counts do). note is shown in lock status.
func callerOwner(ctx context.Context, note string) lockmgr.Owner {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Pid == 0 {
		return lockmgr.Owner{User: "kernel", Key: "anon:" + strconv.FormatUint(anonSeq.Add(1), 10), Note: note}
	}
	tgid := tgidOf(int(c.Pid))
	return lockmgr.Owner{
		User: lockmgr.UserNameOf(c.Uid),
		Key:  "pid:" + strconv.Itoa(tgid),
		PID:  tgid,
		Note: note,
	}
}

// pidfdOpenWorks is cleared when pidfd_open(2) is missing (Linux < 5.3)
// or forbidden, so that tgidOf stops trying it.
var pidfdOpenWorks atomic.Bool

func init() { pidfdOpenWorks.Store(true) }

// tgidOf maps a thread id to the id of its process (thread group).
//
// It is on the path of every open, so it avoids /proc when it can:
// pidfd_open(tid, 0) succeeds only for a thread-group leader, which is
// what single-threaded programs (cat, cp, sed, tar, shells) always are.
// The pidfd is kept (leaderCache), so that the leader's next requests
// cost one pidfd_send_signal(0) instead of creating and closing a file.
// Other threads read /proc/TID/status once (about 20 µs) and are then
// looked up in a cache checked with one stat (about 2 µs). If the thread
// is gone, its id is returned as is: the request is being abandoned
// anyway.
func tgidOf(tid int) int {
	if tid <= 0 {
		return tid
	}
	if pidfdOpenWorks.Load() {
		if leaders.holds(tid) {
			return tid
		}
		fd, err := unix.PidfdOpen(tid, 0)
		switch {
		case err == nil:
			leaders.add(tid, fd)
			return tid
		case errors.Is(err, unix.ESRCH):
			return tid
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			// Not a leader (EINVAL before Linux 6.9, ENOENT since): fall
			// through to /proc.
		default:
			// ENOSYS, EPERM (seccomp)...: never try again.
			pidfdOpenWorks.Store(false)
		}
	}
	if v, ok := threadCache.Load(tid); ok {
		// Still valid if the thread is still in that process: a reused
		// thread id in another process is not in its task directory.
		tgid, _ := v.(int)
		var st unix.Stat_t
		if tgid > 0 && unix.Stat("/proc/"+strconv.Itoa(tgid)+"/task/"+strconv.Itoa(tid), &st) == nil {
			return tgid
		}
		threadCache.Delete(tid)
	}
	if tgid, ok := procTgid(tid); ok {
		if threadCacheSize.Add(1) > maxThreadCache {
			threadCache.Clear()
			threadCacheSize.Store(1)
		}
		threadCache.Store(tid, tgid)
		return tgid
	}
	return tid
}

// leaderCache keeps a pidfd for each thread-group leader that made a
// request. A pidfd names one process for good: while that process exists
// (a zombie included), its id cannot be reused, so a live pidfd proves
// that the id still names the same leader.
type leaderCache struct {
	mu sync.RWMutex // read side while a pidfd is used, so it is not closed meanwhile
	m  map[int]int  // tid -> pidfd
}

var leaders leaderCache

// maxLeaderCache bounds the pidfds kept open.
const maxLeaderCache = 256

// holds reports whether tid is a cached leader that still exists. An
// entry whose process is gone is dropped.
func (c *leaderCache) holds(tid int) bool {
	c.mu.RLock()
	fd, ok := c.m[tid]
	alive := ok && pidfdAlive(fd)
	c.mu.RUnlock()
	if ok && !alive {
		c.mu.Lock()
		if cur, ok := c.m[tid]; ok && cur == fd {
			delete(c.m, tid)
			unix.Close(fd)
		}
		c.mu.Unlock()
	}
	return alive
}

// add keeps fd, a pidfd of leader tid, or closes it.
func (c *leaderCache) add(tid, fd int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[tid]; ok {
		unix.Close(fd) // a concurrent request cached it first
		return
	}
	if c.m == nil || len(c.m) >= maxLeaderCache {
		for _, old := range c.m {
			unix.Close(old)
		}
		c.m = make(map[int]int)
	}
	c.m[tid] = fd
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

// procTgid reads the "Tgid:" line of /proc/TID/status. /proc/TID works
// for any thread id, although only leaders are listed in /proc.
func procTgid(tid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0, false
	}
	return parseTgid(b)
}

func parseTgid(status []byte) (int, bool) {
	i := bytes.Index(status, []byte("\nTgid:"))
	if i < 0 {
		return 0, false
	}
	rest := status[i+len("\nTgid:"):]
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(rest)))
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
