package lockmgr

import (
	"context"
	"encoding/json"
	"time"

	"golang.org/x/sys/unix"
)

// plantdbReleaseWait bounds how long a fresh grant waits for a plantdb
// process to finish its release (see awaitPlantdbRelease). plantdb's own
// steps take microseconds unless the process is descheduled; an .info that
// stays longer belongs to something else (a plantdb holder of a lock file
// another plantdb process already unlinked), and we go on.
const plantdbReleaseWait = time.Second

// awaitPlantdbRelease closes a hole in plantdb's release, which runs
// flock(LOCK_UN), close, unlink(S.lock), unlink(S.info). A process that
// takes the flock between plantdb's LOCK_UN and its unlink holds a file
// that is about to lose its name; plantdb's next acquisition then creates
// and locks a new file, and both "hold" the scan. The path check alone
// cannot see it: the name is still there.
//
// But while plantdb is in that window its S.info still names it although
// it holds no lock any more. So, right after we got the flock and before
// the path check: if S.info was written by a live process that is not a
// scanlockfs process and holds no flock on our file, wait (bounded) until
// S.info goes away or changes, which plantdb does right after the unlink.
// It reports whether, instead, S.info names a live plantdb reader that
// shares our flock (mode is the mode of our flock): its release would
// unlink the file under us (see foreign.go).
func (b *flockBackend) awaitPlantdbRelease(ctx context.Context, f *lockFile, mode Mode) (foreignReader bool) {
	name := f.id + ".info"
	var st unix.Stat_t
	if b.dir.lstat(name, &st) != nil {
		return false // the common case: no .info
	}
	first := fileID{dev: st.Dev, ino: st.Ino}
	releasing, sharing := b.plantdbReleasing(f, name, mode)
	if !releasing {
		return sharing
	}
	b.log.WithField("scan", f.id).Debug("a plantdb process is releasing the scan; waiting for it to unlink the lock file")
	deadline := time.Now().Add(plantdbReleaseWait)
	delay := backoffMin
	for time.Now().Before(deadline) && ctx.Err() == nil && !b.closed.Load() {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
		case <-b.closeCh:
		case <-t.C:
		}
		t.Stop()
		if b.dir.lstat(name, &st) != nil || (fileID{dev: st.Dev, ino: st.Ino}) != first {
			break
		}
		if releasing, _ := b.plantdbReleasing(f, name, mode); !releasing {
			break
		}
		delay = min(delay*2, backoffMax)
	}
	return false
}

// plantdbReleasing reads the .info file name and reports whether its
// writer looks like a plantdb process between its unlock and its unlink,
// or else whether it is a plantdb process sharing our flock on f (a
// reader). Anything but a small regular file is not plantdb's (and is
// not opened: see lockdir.go).
func (b *flockBackend) plantdbReleasing(f *lockFile, name string, mode Mode) (releasing, sharing bool) {
	data, st, err := b.dir.readFile(name)
	if err != nil {
		return false, false
	}
	var inf struct {
		PID  int    `json:"pid"`
		Tool string `json:"tool"`
	}
	if json.Unmarshal(data, &inf) != nil {
		// plantdb writes .info in place (truncate, then write): a torn
		// file is somebody writing right now. Look again shortly, unless
		// it has not changed for longer than we would wait: then its
		// writer died in the middle, and waiting would cost every
		// acquisition the whole wait until somebody removes the file.
		if time.Since(time.Unix(st.Mtim.Unix())) > plantdbReleaseWait {
			return false, false
		}
		return true, false
	}
	if inf.Tool == infoTool || inf.PID == b.pid || !processAlive(inf.PID) {
		return false, false // ours, another scanlockfs process's, or a dead writer's
	}
	f.markForeign("S.info names a live process outside scanlockfs")
	if mode == Exclusive {
		return true, false // we hold it exclusively, so the writer holds nothing on it
	}
	// A shared holder of the same file is a fellow reader, not a releaser.
	locks, err := readProcLocks()
	if err != nil {
		return false, false
	}
	for _, pl := range locks {
		if pl.file == f.fid && pl.kind == "FLOCK" && pl.pid == inf.PID {
			return false, true
		}
	}
	return true, false
}
