package scanstatus

import (
	"math"
	"time"

	"scanlockfs/lockmgr"
)

// FromLockmgr converts lockmgr's view of a scan, as of now, into the
// model. This is the only conversion: a lease of the Manager that made st
// (lockmgr.WhereLocal) is a program of the mount that Manager serves, and
// the note of its owner is the path it opened; a process found in
// /proc/locks (lockmgr.WhereProcess) locks SOURCE directly. A nil st is
// a scan without id, free.
func FromLockmgr(st *lockmgr.ScanStatus, now time.Time) Scan {
	if st == nil {
		return Free("")
	}
	s := Scan{ScanID: st.ScanID, State: st.State, InfoError: st.InfoError, LockError: st.LockError, ClusterError: st.ClusterError,
		Holders: make([]Holder, 0, len(st.Holders)), Waiters: make([]Waiter, 0, len(st.Waiters))}
	if s.State == "" {
		s.State = StateFree
	}
	for _, h := range st.Holders {
		e := entryOf(h, now)
		s.Holders = append(s.Holders, Holder{Entry: e, HeldForSeconds: e.ForSeconds})
	}
	for _, w := range st.Waiters {
		e := entryOf(w, now)
		s.Waiters = append(s.Waiters, Waiter{Entry: e, WaitedSeconds: e.ForSeconds})
	}
	return s
}

// ScansOf converts every non-nil status of list (FromLockmgr).
func ScansOf(list []*lockmgr.ScanStatus, now time.Time) []Scan {
	out := make([]Scan, 0, len(list))
	for _, st := range list {
		if st != nil {
			out = append(out, FromLockmgr(st, now))
		}
	}
	return out
}

func entryOf(h lockmgr.Holder, now time.Time) Entry {
	e := Entry{Mode: h.Mode.String(), PID: h.PID, Command: h.Command, User: h.User, ClaimedUser: h.ClaimedUser, Host: h.Hostname}
	switch h.Where {
	case lockmgr.WhereLocal:
		e.Where, e.Path, e.Owner = WhereMount, h.Note, h.Owner
	case lockmgr.WhereProcess:
		e.Where, e.Note = WhereSource, h.Note
	default: // a kind of holder lockmgr may report later: passed on as it is
		e.Where, e.Note, e.Owner = Where(h.Where), h.Note, h.Owner
	}
	if !h.Since.IsZero() {
		u := UnixSeconds(h.Since)
		d := float64(max(0, now.Sub(h.Since).Milliseconds())) / 1e3
		e.Since, e.SinceUnix, e.ForSeconds = &Time{h.Since}, &u, &d
	}
	return e
}

// NewInfoDoc is the .info document of one scan as of now: st converted,
// or err, the reason there is no state, and redacted for r (nil: shown
// to all).
func NewInfoDoc(st *lockmgr.ScanStatus, err error, now time.Time, r Redactor) InfoDoc {
	doc := InfoDoc{Scan: Free(""), GeneratedAt: Time{now}, GeneratedAtUnix: UnixSeconds(now)}
	if st != nil {
		doc.Scan = FromLockmgr(st, now)
		doc.Redact(r)
	}
	switch {
	case err != nil:
		doc.State, doc.Error = StateUnknown, err.Error()
	case st == nil:
		doc.State, doc.Error = StateUnknown, "no status"
	}
	return doc
}

// NewMountDoc is status.json as of now: hdr (the mount's fields) with the
// scans of list, or err if they could not be listed, redacted for r
// (nil: shown to all).
func NewMountDoc(hdr MountDoc, list []*lockmgr.ScanStatus, err error, now time.Time, r Redactor) MountDoc {
	hdr.GeneratedAt, hdr.GeneratedAtUnix = Time{now}, UnixSeconds(now)
	hdr.Scans = ScansOf(list, now)
	for i := range hdr.Scans {
		hdr.Scans[i].Redact(r)
	}
	if err != nil {
		hdr.Error = err.Error()
	}
	return hdr
}

// UnixSeconds is t in seconds since the epoch, to the millisecond; 0 for
// a time JSON cannot represent.
func UnixSeconds(t time.Time) float64 {
	f := float64(t.UnixMilli()) / 1e3
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
