package fusefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
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
// what single-threaded programs (cat, cp, sed, tar, shells) always are;
// that costs two system calls. Only other threads pay for reading
// /proc/TID/status. If the thread is gone, its id is returned as is: the
// request is being abandoned anyway.
func tgidOf(tid int) int {
	if tid <= 0 {
		return tid
	}
	if pidfdOpenWorks.Load() {
		fd, err := unix.PidfdOpen(tid, 0)
		switch {
		case err == nil:
			unix.Close(fd)
			return tid
		case errors.Is(err, unix.ESRCH):
			return tid
		case errors.Is(err, unix.EINVAL):
			// Not a leader: fall through to /proc.
		default:
			// ENOSYS, EPERM (seccomp)...: never try again.
			pidfdOpenWorks.Store(false)
		}
	}
	if tgid, ok := procTgid(tid); ok {
		return tgid
	}
	return tid
}

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
