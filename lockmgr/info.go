package lockmgr

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// infoTool marks the .info files written by this package, so that other
// processes can tell them from plantdb's.
const infoTool = "scanlockfs"

// Info is the content of a <scan>.info file. The first six fields are
// plantdb's; the others are ours and optional. The file is readable by
// every user who may read the lock directory, and any member of its group
// may write it: what it says is a claim (User above all), and it holds
// no file path. This package writes no Note (older versions wrote the
// owner's note, a path or a command line, there); it still reads one.
// ThreadID is, in files written here, the thread that wrote the file: a
// goroutine holds a lock, not a thread, and asking the thread that took
// the flock cost a system call on every grant for a file most short
// holds never write.
type Info struct {
	ScanID    string  `json:"scan_id"`
	LockType  string  `json:"lock_type"`
	User      string  `json:"user"`
	Timestamp float64 `json:"timestamp"`
	PID       int     `json:"pid"`
	ThreadID  int     `json:"thread_id"`

	Owner    string `json:"owner,omitempty"`
	OwnerPID int    `json:"owner_pid,omitempty"`
	Note     string `json:"note,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	Tool     string `json:"tool,omitempty"`
}

// Time returns Timestamp as a time.
func (i *Info) Time() time.Time {
	sec := int64(i.Timestamp)
	return time.Unix(sec, int64((i.Timestamp-float64(sec))*1e9))
}

// infoState is the .info file of one scan, as far as this process is
// concerned. Guarded by lockFile.mu.
type infoState struct {
	busy  bool   // a write is in flight (without lockFile.mu)
	id    fileID // the file we wrote and have not removed yet
	epoch uint64 // the lockFile.epoch that file describes
}

// infoSweeper writes the delayed .info files of all scans with one timer.
// A timer per scan, reset on every flock, cost a timer operation per
// acquisition, and the reset of a timer that becomes the earliest wakes
// the runtime's poller: on the open+close path of the mount that was
// several futex and epoll wake-ups per open. The sweeper's timer is only
// armed when a scan becomes due while it is not armed, so a stream of
// short holds costs at most one timer operation per delay.
type infoSweeper struct {
	mu      sync.Mutex // taken after lockFile.mu, never before it
	pending map[*lockFile]time.Time
	timer   *time.Timer
	armed   bool
}

// scheduleInfo arranges for the .info file of f to be written
// cfg.infoDelay from now, if this process still holds the flock then.
// Short holds thus never touch the disk for metadata. f.mu is held.
func (b *flockBackend) scheduleInfo(f *lockFile) {
	sw := &b.infoSweep
	due := time.Now().Add(b.cfg.infoDelay)
	sw.mu.Lock()
	if sw.pending == nil {
		sw.pending = make(map[*lockFile]time.Time)
	}
	sw.pending[f] = due
	if !sw.armed {
		sw.armed = true
		if sw.timer == nil {
			sw.timer = time.AfterFunc(b.cfg.infoDelay, b.sweepInfo)
		} else {
			sw.timer.Reset(b.cfg.infoDelay)
		}
	}
	sw.mu.Unlock()
}

// stop disarms the timer (Close: nothing is written any more).
func (sw *infoSweeper) stop() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.timer != nil {
		sw.timer.Stop()
	}
	sw.armed = false
	clear(sw.pending)
}

// sweepInfo runs on the sweeper's timer: it writes the .info files that
// are due and arms the timer again for the earliest of the others.
func (b *flockBackend) sweepInfo() {
	sw := &b.infoSweep
	now := time.Now()
	var due []*lockFile
	var next time.Time
	sw.mu.Lock()
	for s, at := range sw.pending {
		switch {
		case !at.After(now):
			due = append(due, s)
			delete(sw.pending, s)
		case next.IsZero() || at.Before(next):
			next = at
		}
	}
	if next.IsZero() || b.closed.Load() {
		sw.armed = false
	} else {
		sw.timer.Reset(next.Sub(now))
	}
	sw.mu.Unlock()
	for _, f := range due {
		b.infoDue(f)
	}
}

// infoDue writes the .info file of f for the flock this process holds
// now, unless it is already written or a write is in flight (that writer
// looks again when it is done). A flock taken again since the sweep
// picked f (released and retaken, or upgraded) is scheduled anew instead.
func (b *flockBackend) infoDue(f *lockFile) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held != 0 && f.info.epoch != f.epoch && time.Since(f.since) < b.cfg.infoDelay {
		b.scheduleInfo(f)
		return
	}
	for !f.info.busy && f.held != 0 && f.info.epoch != f.epoch && !b.closed.Load() {
		f.info.busy = true
		epoch, mode, owner, since := f.epoch, f.held, f.owner, f.since
		f.mu.Unlock()
		id := b.writeInfo(f.id, mode, owner, since)
		f.mu.Lock()
		f.info.busy = false
		if !id.zero() {
			f.info.id = id
		}
		f.info.epoch = epoch
		f.infoDone.Broadcast() // an unlock may be waiting for the write
	}
}

// cancelInfo, on the way to dropping the flock, cancels a pending write
// and removes the .info file we wrote if it is still ours. f.mu is held
// and no write is in flight (see lockFile.unlock).
func (b *flockBackend) cancelInfo(f *lockFile) {
	if b.cfg.infoFiles && b.cfg.infoDelay > 0 {
		// The sweeper's timer is left alone: it disarms itself when it
		// finds nothing pending.
		b.infoSweep.mu.Lock()
		delete(b.infoSweep.pending, f)
		b.infoSweep.mu.Unlock()
	}
	if !f.info.id.zero() {
		b.removeInfoIfOurs(f.id, f.info.id)
		f.info.id = fileID{}
	}
}

var tmpSeq atomic.Uint64

// writeInfo replaces the .info file of scan id atomically (temporary file
// + rename) so that readers never see half a file, and returns the
// identity of the new file. A failure (a full disk, say) is logged and
// leaves no temporary file behind: the lock itself does not depend on it.
func (b *flockBackend) writeInfo(id string, mode Mode, owner Owner, since time.Time) fileID {
	inf := Info{
		ScanID:    id,
		LockType:  mode.String(),
		User:      owner.User,
		Timestamp: float64(since.UnixNano()) / 1e9,
		PID:       b.pid,
		ThreadID:  unix.Gettid(),
		Owner:     owner.Key,
		OwnerPID:  owner.PID,
		Hostname:  b.hostname,
		Tool:      infoTool,
	}
	data, err := json.Marshal(&inf)
	if err != nil {
		return fileID{}
	}
	// The temporary name does not contain the scan id: a 250-byte id plus
	// a suffix would pass NAME_MAX.
	tmp := ".info-tmp-" + strconv.Itoa(b.pid) + "-" + strconv.FormatUint(tmpSeq.Add(1), 10)
	var fid fileID
	err = b.dir.use(func(dfd int) error {
		var err error
		fid, err = writeFileID(dfd, tmp, data, b.cfg.fileMode)
		if err == nil {
			err = unix.Renameat(dfd, tmp, dfd, id+".info")
		}
		if err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
		}
		return err
	})
	if err != nil {
		b.log.WithField("scan", id).WithError(err).Warn("could not write lock info file; the lock is held without it")
		return fileID{}
	}
	b.stats.infoWrites.Add(1)
	return fid
}

// writeFileID creates name in the directory dfd exclusively (never
// through a symbolic link) with data and mode (not narrowed by the
// umask) and returns the new file's identity.
func writeFileID(dfd int, name string, data []byte, mode os.FileMode) (fileID, error) {
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(mode))
	if err != nil {
		return fileID{}, err
	}
	defer unix.Close(fd)
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fileID{}, err
		}
		data = data[n:]
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fileID{}, err
	}
	if os.FileMode(st.Mode&0o777) != mode {
		if err := unix.Fchmod(fd, uint32(mode)); err != nil {
			return fileID{}, err
		}
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// removeInfoIfOurs removes the .info file of scan id if it is still the
// file we wrote (another process may have replaced it since).
func (b *flockBackend) removeInfoIfOurs(id string, ours fileID) {
	name := id + ".info"
	var st unix.Stat_t
	if b.dir.lstat(name, &st) != nil {
		return
	}
	if (fileID{dev: st.Dev, ino: st.Ino}) == ours {
		_ = b.dir.unlink(name)
	}
}

// ReadInfo reads the .info file of a scan. A missing file returns
// (nil, nil); a corrupt one, or one that is not a regular file with one
// link of at most 64 KiB, returns an error naming the path.
func (m *Manager) ReadInfo(scanID string) (*Info, error) {
	if err := ValidateScanID(scanID); err != nil {
		return nil, err
	}
	return m.readInfo(scanID + ".info")
}

// readInfo reads and parses the .info file name of the lock directory
// (see lockdir.go: no FIFO, device or link is opened, and at most
// maxInfoSize bytes are read).
func (m *Manager) readInfo(name string) (*Info, error) {
	inf, _, err := m.readInfoStat(name)
	return inf, err
}

// readInfoStat is readInfo that also returns the file's status (zero if
// it could not be opened).
func (m *Manager) readInfoStat(name string) (*Info, unix.Stat_t, error) {
	path := m.lockDir + "/" + name
	data, st, err := m.dir.readFile(name)
	if errors.Is(err, unix.ENOENT) {
		return nil, st, nil
	}
	if err != nil {
		var bad *badFileError
		if errors.As(err, &bad) {
			return nil, st, fmt.Errorf("lock info %s %w: not a lock info file; remove it once you have checked it holds nothing of value", path, err)
		}
		return nil, st, fmt.Errorf("reading lock info %s: %w", path, err)
	}
	var inf Info
	if err := json.Unmarshal(data, &inf); err != nil {
		return nil, st, fmt.Errorf("lock info %s is not valid JSON (a stale or half-written file; `scanlockfs cleanup` removes stale ones): %w", path, err)
	}
	return &inf, st, nil
}
