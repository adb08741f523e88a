package scanstatus

import (
	"encoding/json"
	"time"
)

// Where says where a holder or waiter uses the scan.
type Where string

const (
	// WhereMount is a program using the scan through a scanlockfs mount:
	// a lease of the daemon, with the program's pid, owner and path.
	WhereMount Where = "mount"
	// WhereSource is a process that locks SOURCE's lock files directly
	// (plantdb, a lockmgr user, scanlockfs run, another mount's daemon),
	// seen in /proc/locks.
	WhereSource Where = "source"
	// WhereCluster is a holder or waiter seen in etcd (--etcd), of
	// another process, possibly on another host (Host).
	WhereCluster Where = "cluster"
)

// The states of a scan.
const (
	StateFree      = "free"
	StateShared    = "shared"
	StateExclusive = "exclusive"
	// StateUnknown is the state of an InfoDoc whose Error says why the
	// state could not be read.
	StateUnknown = "unknown"
)

// Layout is the one time format of the documents: RFC 3339 with
// milliseconds.
const Layout = "2006-01-02T15:04:05.000Z07:00"

// Time is an instant in the documents, written in Layout. Decoding
// accepts any RFC 3339 time.
type Time struct{ time.Time }

// MarshalJSON writes t in Layout.
func (t Time) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.Format(Layout))
}

// UnmarshalJSON reads an RFC 3339 time.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

// Entry is one holder or waiter of a scan lock.
type Entry struct {
	// Mode is "shared" or "exclusive".
	Mode string `json:"mode"`
	// PID is the process; for WhereMount the program that opened the file
	// (the daemon itself for requests the kernel makes).
	PID int `json:"pid"`
	// Command is the process's name (/proc/PID/comm), "" once it exited.
	Command string `json:"command"`
	// User is the name of the user the lock is taken for: the caller's
	// for WhereMount, the real user of the process (from /proc) for
	// WhereSource.
	User string `json:"user"`
	// ClaimedUser is, for WhereSource, the user that the scan's .info
	// file names for this pid. Any member of the lock directory's group
	// can write that file: it is a claim, User is the fact.
	ClaimedUser string `json:"claimed_user"`
	// Path is what the program opened or changed through the mount,
	// relative to the mount point ("scan_001/files.json"; "a -> b" for a
	// rename). "" for WhereSource, and when PathHidden.
	Path string `json:"path"`
	// PathHidden is true when the reader may not see Path (Redact).
	PathHidden bool `json:"path_hidden"`
	// Where is WhereMount, WhereSource or WhereCluster.
	Where Where `json:"where"`
	// Host is the host name of a WhereCluster holder or waiter; "" for
	// the others (this machine).
	Host string `json:"hostname"`
	// Since is when the lock was granted (holders) or requested
	// (waiters); nil when unknown (a process on SOURCE that wrote no
	// .info file).
	Since *Time `json:"since"`
	// SinceUnix is Since in seconds since the epoch.
	SinceUnix *float64 `json:"since_unix"`
	// ForSeconds is how long it has held or waited when the document was
	// made; nil if Since is.
	ForSeconds *float64 `json:"for_seconds"`
	// Owner is the lock owner's key in the mount ("pid:1234@5678"); ""
	// for WhereSource.
	Owner string `json:"owner"`
	// Note is the note of a holder on SOURCE from its .info file; "" when
	// NoteHidden.
	Note string `json:"note"`
	// NoteHidden is true when the reader may not see Note (Redact).
	NoteHidden bool `json:"note_hidden"`
}

// Holder is a holder of a scan lock.
type Holder struct {
	Entry
	// HeldForSeconds is ForSeconds, under the name the .info documents
	// have always used.
	HeldForSeconds *float64 `json:"held_for_seconds"`
}

// Waiter is a request waiting for a scan lock.
type Waiter struct {
	Entry
	// WaitedSeconds is ForSeconds, under the name the .info documents
	// have always used.
	WaitedSeconds *float64 `json:"waited_seconds"`
}

// Scan is the lock state of one scan.
type Scan struct {
	ScanID string `json:"scan_id"`
	// State is StateFree, StateShared or StateExclusive.
	State   string   `json:"state"`
	Holders []Holder `json:"holders"`
	Waiters []Waiter `json:"waiters"`
	// InfoError says why SOURCE's .info file of the scan could not be
	// read (a corrupt file), "" if it could.
	InfoError string `json:"info_error"`
	// LockError says why nobody can lock the scan (a directory where its
	// lock file should be), naming the path and the fix; "" if nothing
	// is wrong.
	LockError string `json:"lock_error"`
	// ClusterError says why the holders on other hosts are missing
	// (--etcd, etcd unreachable); "" without --etcd or if they are known.
	ClusterError string `json:"cluster_error"`
}

// Free is the state of scan id when nobody holds or waits for it.
func Free(id string) Scan {
	return Scan{ScanID: id, State: StateFree, Holders: []Holder{}, Waiters: []Waiter{}}
}

// Active reports whether anybody holds or waits for the scan.
func (s *Scan) Active() bool { return len(s.Holders)+len(s.Waiters) > 0 }

// InfoDoc is MOUNTPOINT/.locks/<scan_id>.info: one Scan and when it was
// made.
type InfoDoc struct {
	Scan
	GeneratedAt     Time    `json:"generated_at"`
	GeneratedAtUnix float64 `json:"generated_at_unix"`
	// Error says why the state could not be read (State is then
	// StateUnknown), "" if it could.
	Error string `json:"error"`
}

// MountDoc is MOUNTPOINT/.locks/status.json: every scan with a holder or
// a waiter, and the mount itself.
type MountDoc struct {
	GeneratedAt     Time    `json:"generated_at"`
	GeneratedAtUnix float64 `json:"generated_at_unix"`
	Source          string  `json:"source"`
	Mountpoint      string  `json:"mountpoint"`
	LockDir         string  `json:"lock_dir"`
	// PID is the process serving the mount.
	PID int `json:"pid"`
	// TimeoutSeconds is how long an open waits for its lock (0: until
	// interrupted).
	TimeoutSeconds float64 `json:"timeout_seconds"`
	ReadOnly       bool    `json:"read_only"`
	Scans          []Scan  `json:"scans"`
	// Error says why the scans could not be listed, "" if they could.
	Error string `json:"error"`
}

// SourceDoc is what `scanlockfs status --json SOURCE` prints.
type SourceDoc struct {
	Source  string `json:"source"`
	LockDir string `json:"lock_dir"`
	// Time is when the document was made.
	Time  Time   `json:"time"`
	Scans []Scan `json:"scans"`
}
