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
// concerned. Guarded by scanState.mu.
type infoState struct {
	busy  bool   // a write is in flight (without scanState.mu)
	id    fileID // the file we wrote and have not removed yet
	epoch uint64 // the osEpoch that file describes
}

// infoSweeper writes the delayed .info files of all scans with one timer.
// A timer per scan, reset on every flock, cost a timer operation per
// acquisition, and the reset of a timer that becomes the earliest wakes
// the runtime's poller: on the open+close path of the mount that was
// several futex and epoll wake-ups per open. The sweeper's timer is only
// armed when a scan becomes due while it is not armed, so a stream of
// short holds costs at most one timer operation per delay.
type infoSweeper struct {
	mu      sync.Mutex // taken after scanState.mu, never before it
	pending map[*scanState]time.Time
	timer   *time.Timer
	armed   bool
}

// scheduleInfoLocked arranges for the .info file of s to be written
// cfg.infoDelay from now, if this process still holds the flock then.
// Short holds thus never touch the disk for metadata.
func (m *Manager) scheduleInfoLocked(s *scanState) {
	sw := &m.infoSweep
	due := time.Now().Add(m.cfg.infoDelay)
	sw.mu.Lock()
	if sw.pending == nil {
		sw.pending = make(map[*scanState]time.Time)
	}
	sw.pending[s] = due
	if !sw.armed {
		sw.armed = true
		if sw.timer == nil {
			sw.timer = time.AfterFunc(m.cfg.infoDelay, m.sweepInfo)
		} else {
			sw.timer.Reset(m.cfg.infoDelay)
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
func (m *Manager) sweepInfo() {
	sw := &m.infoSweep
	now := time.Now()
	var due []*scanState
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
	if next.IsZero() || m.closed.Load() {
		sw.armed = false
	} else {
		sw.timer.Reset(next.Sub(now))
	}
	sw.mu.Unlock()
	for _, s := range due {
		m.infoDue(s)
	}
}

// infoDue writes the .info file of s for the flock this process holds
// now, unless it is already written or a write is in flight (that writer
// looks again when it is done). A flock taken again since the sweep
// picked s (released and retaken, or upgraded) is scheduled anew instead.
func (m *Manager) infoDue(s *scanState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.osMode != 0 && s.info.epoch != s.osEpoch && time.Since(s.osSince) < m.cfg.infoDelay {
		m.scheduleInfoLocked(s)
		return
	}
	for !s.info.busy && s.osMode != 0 && s.info.epoch != s.osEpoch && !m.closed.Load() {
		s.info.busy = true
		epoch, mode, owner, since, tid := s.osEpoch, s.osMode, s.osOwner, s.osSince, s.osTID
		s.mu.Unlock()
		id := m.writeInfo(s.id, mode, owner, since, tid)
		s.mu.Lock()
		s.info.busy = false
		if !id.zero() {
			s.info.id = id
		}
		s.info.epoch = epoch
		s.broadcastLocked() // a release may be waiting for the write
	}
}

// cancelInfoLocked, on the way to dropping the flock, cancels a pending
// write and removes the .info file we wrote if it is still ours. No write
// is in flight (see releaseIdleLocked).
func (m *Manager) cancelInfoLocked(s *scanState) {
	if m.cfg.infoFiles && m.cfg.infoDelay > 0 {
		// The sweeper's timer is left alone: it disarms itself when it
		// finds nothing pending.
		m.infoSweep.mu.Lock()
		delete(m.infoSweep.pending, s)
		m.infoSweep.mu.Unlock()
	}
	if !s.info.id.zero() {
		m.removeInfoIfOurs(s.id, s.info.id)
		s.info.id = fileID{}
	}
}

var tmpSeq atomic.Uint64

// writeInfo replaces the .info file of scan id atomically (temporary file
// + rename) so that readers never see half a file, and returns the
// identity of the new file. A failure (a full disk, say) is logged and
// leaves no temporary file behind: the lock itself does not depend on it.
func (m *Manager) writeInfo(id string, mode Mode, owner Owner, since time.Time, tid int) fileID {
	inf := Info{
		ScanID:    id,
		LockType:  mode.String(),
		User:      owner.User,
		Timestamp: float64(since.UnixNano()) / 1e9,
		PID:       m.pid,
		ThreadID:  tid,
		Owner:     owner.Key,
		OwnerPID:  owner.PID,
		Hostname:  m.hostname,
		Tool:      infoTool,
	}
	data, err := json.Marshal(&inf)
	if err != nil {
		return fileID{}
	}
	// The temporary name does not contain the scan id: a 250-byte id plus
	// a suffix would pass NAME_MAX.
	tmp := ".info-tmp-" + strconv.Itoa(m.pid) + "-" + strconv.FormatUint(tmpSeq.Add(1), 10)
	var fid fileID
	err = m.dir.use(func(dfd int) error {
		var err error
		fid, err = writeFileID(dfd, tmp, data, m.cfg.fileMode)
		if err == nil {
			err = unix.Renameat(dfd, tmp, dfd, id+".info")
		}
		if err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
		}
		return err
	})
	if err != nil {
		m.log.WithField("scan", id).WithError(err).Warn("could not write lock info file; the lock is held without it")
		return fileID{}
	}
	m.stats.infoWrites.Add(1)
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
func (m *Manager) removeInfoIfOurs(id string, ours fileID) {
	name := id + ".info"
	var st unix.Stat_t
	if m.dir.lstat(name, &st) != nil {
		return
	}
	if (fileID{dev: st.Dev, ino: st.Ino}) == ours {
		_ = m.dir.unlink(name)
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
