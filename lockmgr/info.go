package lockmgr

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Info is the content of a <scan>.info file. The first six fields are
// plantdb's; the others are ours and optional.
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

var tmpSeq atomic.Uint64

// writeInfo replaces the .info file of s atomically (temporary file +
// rename) so that readers never see half a file. A failure (a full disk,
// say) is logged and leaves no temporary file behind: the lock itself
// does not depend on it.
func (m *Manager) writeInfo(s *scanState, mode Mode, owner Owner) {
	host, _ := os.Hostname()
	inf := Info{
		ScanID:    s.id,
		LockType:  mode.String(),
		User:      owner.User,
		Timestamp: float64(time.Now().UnixNano()) / 1e9,
		PID:       m.pid,
		ThreadID:  unix.Gettid(),
		Owner:     owner.Key,
		OwnerPID:  owner.PID,
		Note:      owner.Note,
		Hostname:  host,
		Tool:      "scanlockfs",
	}
	data, err := json.Marshal(&inf)
	if err != nil {
		return
	}
	// The temporary name does not contain the scan id: a 250-byte id plus
	// a suffix would pass NAME_MAX.
	tmp := filepath.Join(m.lockDir, ".info-tmp-"+strconv.Itoa(m.pid)+"-"+strconv.FormatUint(tmpSeq.Add(1), 10))
	id, err := writeFileID(tmp, data, m.cfg.fileMode)
	if err == nil {
		err = os.Rename(tmp, m.infoPath(s.id))
	}
	if err != nil {
		_ = os.Remove(tmp)
		m.log.WithField("scan", s.id).WithError(err).Warn("could not write lock info file; the lock is held without it")
		return
	}
	s.infoID = id
}

func writeFileID(path string, data []byte, mode os.FileMode) (fileID, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fileID{}, err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	var id fileID
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil {
			id = statID(st)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return id, err
}

// removeInfoIfOurs removes the .info file of scan id if it is still the
// file we wrote (another process may have replaced it since).
func (m *Manager) removeInfoIfOurs(id string, ours fileID) {
	p := m.infoPath(id)
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return
	}
	if (fileID{dev: st.Dev, ino: st.Ino}) == ours {
		_ = os.Remove(p)
	}
}

// ReadInfo reads the .info file of a scan. A missing file returns
// (nil, nil); a corrupt one returns an error naming the path.
func (m *Manager) ReadInfo(scanID string) (*Info, error) {
	if err := ValidateScanID(scanID); err != nil {
		return nil, err
	}
	return readInfoFile(m.infoPath(scanID))
}

func readInfoFile(path string) (*Info, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading lock info %s: %w", path, err)
	}
	var inf Info
	if err := json.Unmarshal(data, &inf); err != nil {
		return nil, fmt.Errorf("lock info %s is not valid JSON (a stale or half-written file; `scanlockfs cleanup` removes stale ones): %w", path, err)
	}
	return &inf, nil
}
