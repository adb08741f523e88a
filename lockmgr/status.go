package lockmgr

import (
	"errors"
	"fmt"
	"os/user"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
)

// MarshalText makes modes read "shared" and "exclusive" in JSON.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses "shared" and "exclusive".
func (m *Mode) UnmarshalText(b []byte) error {
	switch string(b) {
	case "shared":
		*m = Shared
	case "exclusive":
		*m = Exclusive
	case "none", "":
		*m = 0
	default:
		return fmt.Errorf("unknown lock mode %q", b)
	}
	return nil
}

// Where a holder or waiter was seen, from this Manager's point of view.
// The documents users read (a mount's .locks, scanlockfs status) say it
// in one vocabulary of their own: package scanstatus converts this view
// (WhereLocal: "mount", WhereProcess: "source").
const (
	// WhereLocal: a lease of this Manager (this process), with owner details.
	WhereLocal = "local"
	// WhereProcess: a flock held or awaited by another process, found in
	// /proc/locks (plantdb, another scanlockfs, flock(1)...).
	WhereProcess = "process"
	// WhereCluster (etcd_status.go): seen in etcd.
)

// Holder is one holder of a scan lock.
type Holder struct {
	Mode    Mode   `json:"mode"`
	PID     int    `json:"pid"`
	Command string `json:"command,omitempty"`
	// User is who the holder is: the owner's user for WhereLocal, the
	// real user of the process (from /proc) for WhereProcess; "" when the
	// process is gone.
	User string `json:"user,omitempty"`
	// ClaimedUser is the user field of the scan's .info file, for a
	// WhereProcess holder whose pid it names. Any member of the lock
	// directory's group can write that file, so it is only a claim.
	ClaimedUser string    `json:"claimed_user,omitempty"`
	Owner       string    `json:"owner,omitempty"`
	Note        string    `json:"note,omitempty"`
	Since       time.Time `json:"since,omitzero"`
	Where       string    `json:"where"`
	// Hostname is the host of a WhereCluster holder or waiter.
	Hostname string `json:"hostname,omitempty"`
}

// Waiter is one request waiting for a scan lock.
type Waiter = Holder

// ScanStatus is who holds and who waits for one scan right now.
type ScanStatus struct {
	ScanID  string   `json:"scan_id"`
	State   string   `json:"state"` // "free", "shared" or "exclusive"
	Holders []Holder `json:"holders"`
	Waiters []Waiter `json:"waiters"`
	// Info is the scan's .info file, if there is one.
	Info *Info `json:"info,omitempty"`
	// InfoError says why an existing .info file could not be read.
	InfoError string `json:"info_error,omitempty"`
	// LockError says why nobody can lock the scan (a directory where its
	// lock file should be), naming the path and the fix.
	LockError string `json:"lock_error,omitempty"`
	// ClusterError says why the holders on other hosts are missing (etcd
	// could not be read).
	ClusterError string `json:"cluster_error,omitempty"`
}

// Active reports whether anybody holds or waits for the scan.
func (st *ScanStatus) Active() bool { return len(st.Holders)+len(st.Waiters) > 0 }

// Status tells who holds and who waits for scanID right now: this
// manager's leases and waiters (with owners), and the flocks other
// processes hold or wait for on the scan's lock file (from /proc/locks),
// joined with the .info file. A scan nobody holds is "free", not an error.
// The other processes' part is as good as /proc/locks, which the kernel
// does not produce atomically: while many locks change, a holder can be
// missed.
func (m *Manager) Status(scanID string) (*ScanStatus, error) {
	if err := ValidateScanID(scanID); err != nil {
		return nil, err
	}
	locks, err := readProcLocks()
	if err != nil {
		return nil, err
	}
	return m.status(scanID, locks), nil
}

// List returns the status of every scan that has a holder or a waiter,
// here or in another process, sorted by scan id.
func (m *Manager) List() ([]*ScanStatus, error) {
	locks, err := readProcLocks()
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	if err := m.clusterScanIDs(ids); err != nil {
		return nil, err
	}
	for _, s := range m.sched.inUse() {
		ids[s.id] = true
	}
	held := map[fileID]bool{}
	for _, pl := range locks {
		if pl.kind == "FLOCK" {
			held[pl.file] = true
		}
	}
	if len(held) > 0 {
		if err := m.dir.refresh(); err != nil {
			return nil, err
		}
		names, err := m.dir.names()
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%w: listing %s: %w", ErrLockFile, m.lockDir, err)
		}
		for _, name := range names {
			id, ok := strings.CutSuffix(name, ".lock")
			if !ok || ValidateScanID(id) != nil || ids[id] {
				continue
			}
			var st unix.Stat_t
			if m.dir.lstat(name, &st) == nil && held[fileID{st.Dev, st.Ino}] {
				ids[id] = true
			}
		}
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	var out []*ScanStatus
	for _, id := range sorted {
		if st := m.status(id, locks); st.Active() {
			out = append(out, st)
		}
	}
	return out, nil
}

func (m *Manager) status(id string, locks []procLock) *ScanStatus {
	st := &ScanStatus{ScanID: id, Holders: []Holder{}, Waiters: []Waiter{}}
	// A lock directory created (or replaced) since New: look at the new
	// one. One that became a symbolic link is not followed.
	if err := m.dir.refresh(); err != nil {
		st.LockError = err.Error()
	}
	inf, err := m.readInfo(id + ".info")
	if err != nil {
		st.InfoError = err.Error()
	}
	st.Info = inf

	// This process: leases and waiters, with their owners.
	m.sched.snapshot(id, func(o Owner, mode Mode, since time.Time) {
		st.Holders = append(st.Holders, m.localEntry(o, mode, since))
	}, func(o Owner, mode Mode, since time.Time) {
		st.Waiters = append(st.Waiters, m.localEntry(o, mode, since))
	})

	// Other processes, from /proc/locks.
	var lst unix.Stat_t
	if m.dir.lstat(id+".lock", &lst) != nil {
		lst = unix.Stat_t{}
	}
	if err := checkFile(&lst); lst.Ino != 0 && err != nil {
		st.LockError = fmt.Sprintf("lock file %s %v, so nobody can lock scan %s: remove it (rm, or rmdir for a directory) once you have checked it holds nothing of value",
			m.lockPath(id), err, id)
	} else if lst.Ino != 0 {
		fid := fileID{lst.Dev, lst.Ino}
		seen := map[procLock]bool{}
		for _, pl := range locks {
			if pl.file != fid || pl.kind != "FLOCK" || pl.pid == m.pid || seen[pl] {
				continue
			}
			seen[pl] = true
			e := Holder{Mode: pl.mode, PID: pl.pid, Command: procComm(pl.pid), User: procUser(pl.pid), Where: WhereProcess}
			if inf != nil && inf.PID == pl.pid {
				e.Since = inf.Time()
				e.ClaimedUser = inf.User
				e.Note = inf.Note
			}
			if pl.blocked {
				st.Waiters = append(st.Waiters, e)
			} else {
				st.Holders = append(st.Holders, e)
			}
		}
	}
	// Processes of ours that wait by polling (waitrec.go).
	for _, w := range m.recordedWaiters(id, locks) {
		if !slices.ContainsFunc(st.Waiters, func(x Waiter) bool { return x.PID == w.PID && x.Mode == w.Mode }) {
			st.Waiters = append(st.Waiters, w)
		}
	}
	m.clusterStatus(id, st)
	sort.SliceStable(st.Holders, func(i, j int) bool { return st.Holders[i].Since.Before(st.Holders[j].Since) })
	sort.SliceStable(st.Waiters, func(i, j int) bool { return st.Waiters[i].Since.Before(st.Waiters[j].Since) })
	st.State = "free"
	for _, h := range st.Holders {
		if h.Mode == Exclusive {
			st.State = "exclusive"
			break
		}
		st.State = "shared"
	}
	return st
}

func (m *Manager) localEntry(o Owner, mode Mode, since time.Time) Holder {
	pid := o.PID
	if pid == 0 {
		pid = m.pid
	}
	return Holder{Mode: mode, PID: pid, Command: procComm(pid), User: o.User, Owner: o.Key,
		Note: o.Note, Since: since, Where: WhereLocal}
}

var uidNames sync.Map // uint32 -> string

// procUser returns the name of the real user of a process, or "" if it
// is gone.
func procUser(pid int) string {
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		return ""
	}
	return UserNameOf(st.Uid[0])
}

// UserNameOf returns the name of uid, or the number if it has no name.
func UserNameOf(uid uint32) string {
	if v, ok := uidNames.Load(uid); ok {
		return v.(string)
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	uidNames.Store(uid, name)
	return name
}
