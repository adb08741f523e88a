package fusefs

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
)

var (
	testNow   = time.Date(2025, 11, 28, 9, 1, 2, 500_000_000, time.UTC)
	testSince = testNow.Add(-12*time.Second - 250*time.Millisecond)
)

func decodeInfo(t *testing.T, b []byte) InfoDoc {
	t.Helper()
	var doc InfoDoc
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("not an InfoDoc: %v\n%s", err, b)
	}
	return doc
}

// The daemon's own leases are programs of the mount, with the path they
// opened; /proc/locks entries are processes on SOURCE, with their note.
func TestRenderInfoTranslatesHoldersAndWaiters(t *testing.T) {
	st := &lockmgr.ScanStatus{
		ScanID: "scan_001", State: "exclusive",
		Holders: []lockmgr.Holder{{Mode: lockmgr.Exclusive, PID: 4321, Command: "cp", User: "alice",
			Owner: "pid:4321", Note: "scan_001/images/a.jpg", Since: testSince, Where: lockmgr.WhereLocal}},
		Waiters: []lockmgr.Waiter{
			{Mode: lockmgr.Shared, PID: 77, Command: "python3", User: "bob", Note: "run: make", Where: lockmgr.WhereProcess},
			{Mode: lockmgr.Shared, PID: 78, Command: "cat", User: "carol", Owner: "pid:78", Note: "scan_001/files.json",
				Since: testNow.Add(-1500 * time.Millisecond), Where: lockmgr.WhereLocal},
		},
	}
	doc := decodeInfo(t, renderInfo(st, nil, testNow))
	if doc.ScanID != "scan_001" || doc.State != "exclusive" || doc.Error != "" {
		t.Fatalf("scan %q state %q error %q", doc.ScanID, doc.State, doc.Error)
	}
	if doc.GeneratedAt != "2025-11-28T09:01:02.500Z" || doc.GeneratedAtUnix != 1764320462.5 {
		t.Errorf("generated %q %v", doc.GeneratedAt, doc.GeneratedAtUnix)
	}
	if len(doc.Holders) != 1 || len(doc.Waiters) != 2 {
		t.Fatalf("holders %d waiters %d", len(doc.Holders), len(doc.Waiters))
	}
	h := doc.Holders[0]
	if h.Mode != "exclusive" || h.PID != 4321 || h.Command != "cp" || h.User != "alice" || h.Where != WhereMount ||
		h.Path != "scan_001/images/a.jpg" || h.Owner != "pid:4321" || h.Note != "" {
		t.Errorf("holder %+v", h.LockEntry)
	}
	if h.Since == nil || *h.Since != "2025-11-28T09:00:50.250Z" || h.SinceUnix == nil || *h.SinceUnix != 1764320450.25 {
		t.Errorf("holder since %v %v", h.Since, h.SinceUnix)
	}
	if h.HeldForSeconds == nil || *h.HeldForSeconds != 12.25 {
		t.Errorf("held for %v, want 12.25", h.HeldForSeconds)
	}
	src := doc.Waiters[0]
	if src.Where != WhereSource || src.Path != "" || src.Note != "run: make" || src.Owner != "" || src.PID != 77 {
		t.Errorf("source waiter %+v", src.LockEntry)
	}
	if src.Since != nil || src.SinceUnix != nil || src.WaitedSeconds != nil {
		t.Errorf("unknown times must be null: %v %v %v", src.Since, src.SinceUnix, src.WaitedSeconds)
	}
	if w := doc.Waiters[1]; w.Where != WhereMount || w.Path != "scan_001/files.json" || w.WaitedSeconds == nil || *w.WaitedSeconds != 1.5 {
		t.Errorf("mount waiter %+v waited %v", w.LockEntry, w.WaitedSeconds)
	}
}

// LockEntry.Holder gives back what lockEntry took, in the mount's terms.
func TestLockEntryHolderRoundTrip(t *testing.T) {
	in := lockmgr.Holder{Mode: lockmgr.Exclusive, PID: 9, Command: "cp", User: "alice", Owner: "pid:9",
		Note: "scan_001/a", Since: testSince, Where: lockmgr.WhereLocal}
	got := lockEntry(in, nil).Holder()
	want := in
	want.Where = WhereMount
	if !got.Since.Equal(want.Since) {
		t.Errorf("since %v, want %v", got.Since, want.Since)
	}
	got.Since, want.Since = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("mount entry: %+v, want %+v", got, want)
	}
	src := lockmgr.Holder{Mode: lockmgr.Shared, PID: 7, Note: "run: make", Where: lockmgr.WhereProcess}
	if got := lockEntry(src, nil).Holder(); got.Where != WhereSource || got.Note != "run: make" || !got.Since.IsZero() || got.Mode != lockmgr.Shared {
		t.Errorf("source entry: %+v", got)
	}
}

// Every documented key is present in every document, also when empty:
// scripts index them without checking.
func TestRenderedDocumentsHaveEveryKey(t *testing.T) {
	st := &lockmgr.ScanStatus{ScanID: "s", State: "shared",
		Holders: []lockmgr.Holder{{Mode: lockmgr.Shared, PID: 1, Where: lockmgr.WhereProcess}},
		Waiters: []lockmgr.Waiter{{Mode: lockmgr.Exclusive, PID: 2, Where: lockmgr.WhereLocal}}}
	var info map[string]any
	noErr(t, json.Unmarshal(renderInfo(st, nil, testNow), &info))
	wantKeys(t, "info", info, "scan_id", "state", "generated_at", "generated_at_unix", "holders", "waiters", "info_error", "error")
	entry := []string{"mode", "pid", "command", "user", "claimed_user", "path", "path_hidden", "where", "since", "since_unix", "owner", "note", "note_hidden"}
	wantKeys(t, "holder", info["holders"].([]any)[0].(map[string]any), append(entry, "held_for_seconds")...)
	wantKeys(t, "waiter", info["waiters"].([]any)[0].(map[string]any), append(entry, "waited_seconds")...)

	var ms map[string]any
	noErr(t, json.Unmarshal(renderMountStatus(MountStatus{}, []*lockmgr.ScanStatus{st}, nil, testNow), &ms))
	wantKeys(t, "status.json", ms, "generated_at", "generated_at_unix", "source", "mountpoint", "lock_dir", "pid",
		"timeout_seconds", "read_only", "scans", "error")
	wantKeys(t, "status.json scan", ms["scans"].([]any)[0].(map[string]any), "scan_id", "state", "holders", "waiters", "info_error")
}

func wantKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("%s keys %q, want %q", what, got, keys)
	}
}

// A scan nobody holds has empty lists, not null; a failed query is a
// document that says why.
func TestRenderInfoFreeAndFailed(t *testing.T) {
	free := renderInfo(&lockmgr.ScanStatus{ScanID: "s", State: "free"}, nil, testNow)
	if !bytes.Contains(free, []byte(`"holders": []`)) || !bytes.Contains(free, []byte(`"waiters": []`)) {
		t.Errorf("free scan:\n%s", free)
	}
	doc := decodeInfo(t, renderInfo(nil, errors.New("reading /proc/locks: permission denied"), testNow))
	if doc.State != "unknown" || doc.Error != "reading /proc/locks: permission denied" || doc.Holders == nil || doc.Waiters == nil {
		t.Errorf("failed query: %+v", doc)
	}
	if !bytes.HasSuffix(free, []byte("}\n")) {
		t.Errorf("document does not end with a newline: %q", free)
	}
}

func TestRenderMountStatus(t *testing.T) {
	hdr := MountStatus{Source: "/data/db", Mountpoint: "/mnt/db", LockDir: "/data/db/.locks", PID: 99, TimeoutSeconds: 30}
	list := []*lockmgr.ScanStatus{
		{ScanID: "a", State: "shared", Holders: []lockmgr.Holder{{Mode: lockmgr.Shared, PID: 5, Where: lockmgr.WhereLocal, Note: "a/x"}}},
		nil,
		{ScanID: "b", State: "exclusive", Holders: []lockmgr.Holder{{Mode: lockmgr.Exclusive, PID: 6, Where: lockmgr.WhereProcess}}},
	}
	var ms MountStatus
	noErr(t, json.Unmarshal(renderMountStatus(hdr, list, nil, testNow), &ms))
	if ms.Source != "/data/db" || ms.Mountpoint != "/mnt/db" || ms.PID != 99 || ms.TimeoutSeconds != 30 || ms.GeneratedAt == "" {
		t.Errorf("header %+v", ms)
	}
	if len(ms.Scans) != 2 || ms.Scans[0].ScanID != "a" || ms.Scans[1].ScanID != "b" ||
		ms.Scans[0].Holders[0].Path != "a/x" || ms.Scans[1].Holders[0].Where != WhereSource {
		t.Errorf("scans %+v", ms.Scans)
	}
	empty := renderMountStatus(hdr, nil, errors.New("boom"), testNow)
	noErr(t, json.Unmarshal(empty, &ms))
	if ms.Scans == nil || len(ms.Scans) != 0 || ms.Error != "boom" {
		t.Errorf("failed listing: %s", empty)
	}
}

// FuzzRenderInfo: whatever other programs put in their .info files and
// process names (invalid UTF-8, newlines, quotes, NUL), and whatever the
// times, the documents are valid JSON with one entry per holder and
// waiter, and valid strings come back unchanged.
func FuzzRenderInfo(f *testing.F) {
	f.Add("scan_001", "exclusive", "cp", "alice", "scan_001/a.jpg", "pid:12", "local", 12, 2, testSince.UnixNano(), testNow.UnixNano(), "", false)
	f.Add("s", "shared", "py\nthon", "b\xffob", "run: \"make\"\x00", "", "process", -1, 7, int64(0), int64(-1), "err\n", true)
	f.Fuzz(func(t *testing.T, scan, state, command, user, note, owner, where string, pid, mode int, since, now int64, errText string, waiting bool) {
		e := lockmgr.Holder{Mode: lockmgr.Mode(mode), PID: pid, Command: command, User: user, Owner: owner,
			Note: note, Where: where}
		if since != 0 {
			e.Since = time.Unix(0, since)
		}
		st := &lockmgr.ScanStatus{ScanID: scan, State: state}
		if waiting {
			st.Waiters = []lockmgr.Waiter{e}
		} else {
			st.Holders = []lockmgr.Holder{e}
		}
		var err error
		if errText != "" {
			err = errors.New(errText)
		}
		at := time.Unix(0, now)

		out := renderInfo(st, err, at)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON:\n%s", out)
		}
		doc := decodeInfo(t, out)
		if len(doc.Holders)+len(doc.Waiters) != 1 {
			t.Fatalf("%d holders, %d waiters, want one entry", len(doc.Holders), len(doc.Waiters))
		}
		var got LockEntry
		if waiting {
			got = doc.Waiters[0].LockEntry
		} else {
			got = doc.Holders[0].LockEntry
		}
		if got.PID != pid {
			t.Errorf("pid %d, want %d", got.PID, pid)
		}
		for _, p := range [][2]string{{got.Command, command}, {got.User, user}, {doc.ScanID, scan}} {
			if utf8.ValidString(p[1]) && p[0] != p[1] {
				t.Errorf("%q came back as %q", p[1], p[0])
			}
		}
		if (got.Since == nil) != e.Since.IsZero() {
			t.Errorf("since %v for time %v", got.Since, e.Since)
		}
		ms := renderMountStatus(MountStatus{Source: note, Mountpoint: command}, []*lockmgr.ScanStatus{st}, err, at)
		if !json.Valid(ms) {
			t.Fatalf("invalid status.json:\n%s", ms)
		}
	})
}

// noErr fails t with err, if err is not nil.
var noErr = testutil.Must
