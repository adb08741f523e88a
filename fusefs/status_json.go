package fusefs

import (
	"bytes"
	"encoding/json"
	"math"
	"time"

	"scanlockfs/lockmgr"
)

// The JSON documents of MOUNTPOINT/.locks: <scan_id>.info and
// status.json. Their keys are an interface for scripts (jq, watch,
// scanlockfs status): add keys, never rename or drop them. Every key is
// always present; times that are not known are null.

// Where a holder or waiter uses the scan.
const (
	// WhereMount: a program using the scan through this mount.
	WhereMount = "mount"
	// WhereSource: a process locking SOURCE directly (plantdb, a
	// lockmgr user, scanlockfs run, another mount), seen in /proc/locks.
	WhereSource = "source"
)

// timeLayout is RFC 3339 with milliseconds.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// LockEntry describes one holder or waiter of a scan lock.
type LockEntry struct {
	// Mode is "shared" or "exclusive".
	Mode string `json:"mode"`
	// PID is the process; for Where "mount" the program that opened
	// the file (the daemon itself for requests the kernel makes).
	PID int `json:"pid"`
	// Command is the process's name (/proc/PID/comm), "" once it exited.
	Command string `json:"command"`
	// User is the name of the user the lock is taken for: the caller's
	// for Where "mount", the real user of the process (from /proc) for
	// Where "source".
	User string `json:"user"`
	// ClaimedUser is, for Where "source", the user that the scan's .info
	// file names for this pid. Any member of the lock directory's group
	// can write that file: it is a claim, User is the fact.
	ClaimedUser string `json:"claimed_user"`
	// Path is what the program opened or changed through the mount,
	// relative to the mount point ("scan_001/files.json"; "a -> b" for a
	// rename). "" for Where "source", and when PathHidden.
	Path string `json:"path"`
	// PathHidden is true when the reader may not see Path: it is shown
	// only to root, to the holder's user and to users who may list the
	// directory it is in (see status_viewer.go).
	PathHidden bool `json:"path_hidden"`
	// Where is WhereMount or WhereSource, or "cluster" (--etcd) for a
	// holder seen in etcd, on Hostname.
	Where    string `json:"where"`
	Hostname string `json:"hostname,omitempty"`
	// Since is when the lock was granted (holders) or requested
	// (waiters), RFC 3339; null when unknown (a process on SOURCE that
	// wrote no .info file).
	Since *string `json:"since"`
	// SinceUnix is Since in seconds since the epoch.
	SinceUnix *float64 `json:"since_unix"`
	// Owner is the lock owner's key in this mount ("pid:1234"), "" for
	// Where "source".
	Owner string `json:"owner"`
	// Note is the note of a holder on SOURCE from its .info file (older
	// versions of scanlockfs run wrote their command there). "" when
	// NoteHidden.
	Note string `json:"note"`
	// NoteHidden is true when the reader may not see Note: it is shown
	// only to root and to the holder's user.
	NoteHidden bool `json:"note_hidden"`
}

// Holder converts e back to lockmgr's form, for tools that merge a
// mount's view into lockmgr.ScanStatus (scanlockfs status): Where stays
// WhereMount or WhereSource, and Note holds the path of a mount entry.
func (e LockEntry) Holder() lockmgr.Holder {
	h := lockmgr.Holder{PID: e.PID, Command: e.Command, User: e.User, ClaimedUser: e.ClaimedUser, Owner: e.Owner, Note: e.Note, Where: e.Where}
	_ = h.Mode.UnmarshalText([]byte(e.Mode)) // unknown modes stay 0, "none"
	if e.Where == WhereMount {
		h.Note = e.Path
		if e.PathHidden {
			h.Note = HiddenNote
		}
	} else if e.NoteHidden {
		h.Note = HiddenNote
	}
	if e.Since != nil {
		if t, err := time.Parse(time.RFC3339, *e.Since); err == nil {
			h.Since = t
		}
	}
	return h
}

// HiddenNote is the note of a holder converted by LockEntry.Holder whose
// path or note the reader may not see.
const HiddenNote = "(hidden from you)"

// HolderInfo is a holder of a scan lock.
type HolderInfo struct {
	LockEntry
	// HeldForSeconds is how long it has held the lock; null if Since is.
	HeldForSeconds *float64 `json:"held_for_seconds"`
}

// WaiterInfo is a request waiting for a scan lock.
type WaiterInfo struct {
	LockEntry
	// WaitedSeconds is how long it has waited so far; null if Since is.
	WaitedSeconds *float64 `json:"waited_seconds"`
}

// ScanInfo is the lock state of one scan.
type ScanInfo struct {
	ScanID string `json:"scan_id"`
	// State is "free", "shared" or "exclusive".
	State   string       `json:"state"`
	Holders []HolderInfo `json:"holders"`
	Waiters []WaiterInfo `json:"waiters"`
	// InfoError says why SOURCE's .info file of the scan could not be
	// read (a corrupt file), "" if it could.
	InfoError string `json:"info_error"`
}

// InfoDoc is the content of MOUNTPOINT/.locks/<scan_id>.info: ScanInfo
// and when it was rendered.
type InfoDoc struct {
	ScanID string `json:"scan_id"`
	// State is "free", "shared" or "exclusive"; "unknown" with Error.
	State           string       `json:"state"`
	GeneratedAt     string       `json:"generated_at"`
	GeneratedAtUnix float64      `json:"generated_at_unix"`
	Holders         []HolderInfo `json:"holders"`
	Waiters         []WaiterInfo `json:"waiters"`
	InfoError       string       `json:"info_error"`
	// Error says why the state could not be read, "" if it could.
	Error string `json:"error"`
}

// MountStatus is the content of MOUNTPOINT/.locks/status.json: every
// scan with a holder or a waiter, and the mount itself.
type MountStatus struct {
	GeneratedAt     string  `json:"generated_at"`
	GeneratedAtUnix float64 `json:"generated_at_unix"`
	Source          string  `json:"source"`
	Mountpoint      string  `json:"mountpoint"`
	LockDir         string  `json:"lock_dir"`
	// PID is the process serving the mount.
	PID int `json:"pid"`
	// TimeoutSeconds is how long an open waits for its lock (0: until
	// interrupted).
	TimeoutSeconds float64    `json:"timeout_seconds"`
	ReadOnly       bool       `json:"read_only"`
	Scans          []ScanInfo `json:"scans"`
	Error          string     `json:"error"`
}

// renderInfo renders the .info document of one scan from its status (or
// from err, the reason there is none), everything shown.
func renderInfo(st *lockmgr.ScanStatus, err error, now time.Time) []byte {
	return renderInfoFor(st, err, now, nil)
}

// renderInfoFor is renderInfo with what r hides hidden.
func renderInfoFor(st *lockmgr.ScanStatus, err error, now time.Time, r *redactor) []byte {
	doc := InfoDoc{State: "unknown", GeneratedAt: now.Format(timeLayout), GeneratedAtUnix: unixSeconds(now),
		Holders: []HolderInfo{}, Waiters: []WaiterInfo{}}
	if st != nil {
		si := scanInfo(st, now, r)
		doc.ScanID, doc.Holders, doc.Waiters, doc.InfoError = si.ScanID, si.Holders, si.Waiters, si.InfoError
		if err == nil {
			doc.State = si.State
		}
	}
	if err != nil {
		doc.Error = err.Error()
	} else if st == nil {
		doc.Error = "no status"
	}
	return encodeDoc(&doc)
}

// renderMountStatus renders status.json: hdr (the mount's fields) with
// the scans of list, or err if they could not be listed, everything
// shown.
func renderMountStatus(hdr MountStatus, list []*lockmgr.ScanStatus, err error, now time.Time) []byte {
	return renderMountStatusFor(hdr, list, err, now, nil)
}

// renderMountStatusFor is renderMountStatus with what r hides hidden.
func renderMountStatusFor(hdr MountStatus, list []*lockmgr.ScanStatus, err error, now time.Time, r *redactor) []byte {
	hdr.GeneratedAt, hdr.GeneratedAtUnix = now.Format(timeLayout), unixSeconds(now)
	hdr.Scans = make([]ScanInfo, 0, len(list))
	for _, st := range list {
		if st != nil {
			hdr.Scans = append(hdr.Scans, scanInfo(st, now, r))
		}
	}
	if err != nil {
		hdr.Error = err.Error()
	}
	return encodeDoc(&hdr)
}

func scanInfo(st *lockmgr.ScanStatus, now time.Time, r *redactor) ScanInfo {
	si := ScanInfo{ScanID: st.ScanID, State: st.State, InfoError: st.InfoError,
		Holders: make([]HolderInfo, 0, len(st.Holders)), Waiters: make([]WaiterInfo, 0, len(st.Waiters))}
	if si.State == "" {
		si.State = "free"
	}
	for _, h := range st.Holders {
		si.Holders = append(si.Holders, HolderInfo{LockEntry: lockEntry(h, r), HeldForSeconds: secondsSince(h.Since, now)})
	}
	for _, w := range st.Waiters {
		si.Waiters = append(si.Waiters, WaiterInfo{LockEntry: lockEntry(w, r), WaitedSeconds: secondsSince(w.Since, now)})
	}
	return si
}

// lockEntry translates lockmgr's view into the mount's: the daemon's
// own leases are the mount's programs, whose note is the path they
// opened; other processes lock SOURCE directly. r (nil: show all) hides
// what the reader may not see.
func lockEntry(h lockmgr.Holder, r *redactor) LockEntry {
	e := LockEntry{Mode: h.Mode.String(), PID: h.PID, Command: h.Command, User: h.User, ClaimedUser: h.ClaimedUser, Hostname: h.Hostname}
	switch h.Where {
	case lockmgr.WhereLocal:
		e.Where, e.Path, e.Owner = WhereMount, h.Note, h.Owner
		if !r.showPath(h.Note, h.User) {
			e.Path, e.PathHidden = "", true
		}
	case lockmgr.WhereProcess:
		e.Where, e.Note = WhereSource, h.Note
	default:
		e.Where, e.Note, e.Owner = h.Where, h.Note, h.Owner
	}
	if e.Note != "" && !r.showNote(e.Note, h.User) {
		e.Note, e.NoteHidden = "", true
	}
	if !h.Since.IsZero() {
		s, u := h.Since.Format(timeLayout), unixSeconds(h.Since)
		e.Since, e.SinceUnix = &s, &u
	}
	return e
}

// secondsSince is now-t in seconds (milliseconds precision, never
// negative), or nil if t is unknown.
func secondsSince(t, now time.Time) *float64 {
	if t.IsZero() {
		return nil
	}
	s := float64(max(0, now.Sub(t).Milliseconds())) / 1e3
	return &s
}

func unixSeconds(t time.Time) float64 { return finite(float64(t.UnixMilli()) / 1e3) }

// finite keeps NaN and infinities, which JSON cannot represent, out of
// the documents.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// encodeDoc encodes v as indented JSON with a final newline. Strings
// from other programs (command names, notes from .info files, paths) may
// hold anything: encoding/json escapes control characters and replaces
// invalid UTF-8, so the document stays valid JSON.
func encodeDoc(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		// Not reachable with the types above; still a document.
		b.Reset()
		msg, _ := json.Marshal(err.Error())
		b.WriteString(`{"error": ` + string(msg) + "}\n")
	}
	return b.Bytes()
}
