package scanstatus

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

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

func renderInfo(st *lockmgr.ScanStatus, err error, now time.Time) []byte {
	return Encode(NewInfoDoc(st, err, now, nil))
}

func renderMount(hdr MountDoc, list []*lockmgr.ScanStatus, err error, now time.Time) []byte {
	return Encode(NewMountDoc(hdr, list, err, now, nil))
}

// The leases of the manager are programs of the mount, with the path
// they opened; /proc/locks entries are processes on SOURCE, with their
// note. Times are in the one layout, with their age.
func TestFromLockmgrTranslatesHoldersAndWaiters(t *testing.T) {
	st := &lockmgr.ScanStatus{
		ScanID: "scan_001", State: "exclusive", LockError: "lock file is a directory",
		Holders: []lockmgr.Holder{{Mode: lockmgr.Exclusive, PID: 4321, Command: "cp", User: "alice",
			Owner: "pid:4321", Note: "scan_001/images/a.jpg", Since: testSince, Where: lockmgr.WhereLocal}},
		Waiters: []lockmgr.Waiter{
			{Mode: lockmgr.Shared, PID: 77, Command: "python3", User: "bob", ClaimedUser: "eve", Note: "run: make", Where: lockmgr.WhereProcess},
			{Mode: lockmgr.Shared, PID: 78, Command: "cat", User: "carol", Owner: "pid:78", Note: "scan_001/files.json",
				Since: testNow.Add(-1500 * time.Millisecond), Where: lockmgr.WhereLocal},
		},
	}
	doc := decodeInfo(t, renderInfo(st, nil, testNow))
	if doc.ScanID != "scan_001" || doc.State != StateExclusive || doc.Error != "" || doc.LockError != st.LockError {
		t.Fatalf("scan %q state %q error %q lock error %q", doc.ScanID, doc.State, doc.Error, doc.LockError)
	}
	if doc.GeneratedAt.Format(Layout) != "2025-11-28T09:01:02.500Z" || doc.GeneratedAtUnix != 1764320462.5 {
		t.Errorf("generated %v %v", doc.GeneratedAt, doc.GeneratedAtUnix)
	}
	if len(doc.Holders) != 1 || len(doc.Waiters) != 2 {
		t.Fatalf("holders %d waiters %d", len(doc.Holders), len(doc.Waiters))
	}
	h := doc.Holders[0]
	if h.Mode != "exclusive" || h.PID != 4321 || h.Command != "cp" || h.User != "alice" || h.Where != WhereMount ||
		h.Path != "scan_001/images/a.jpg" || h.Owner != "pid:4321" || h.Note != "" || h.Host != "" {
		t.Errorf("holder %+v", h.Entry)
	}
	if h.Since == nil || !h.Since.Equal(testSince) || h.SinceUnix == nil || *h.SinceUnix != 1764320450.25 {
		t.Errorf("holder since %v %v", h.Since, h.SinceUnix)
	}
	if h.HeldForSeconds == nil || *h.HeldForSeconds != 12.25 || h.ForSeconds == nil || *h.ForSeconds != 12.25 {
		t.Errorf("held for %v / %v, want 12.25", h.HeldForSeconds, h.ForSeconds)
	}
	src := doc.Waiters[0]
	if src.Where != WhereSource || src.Path != "" || src.Note != "run: make" || src.Owner != "" || src.PID != 77 || src.ClaimedUser != "eve" {
		t.Errorf("source waiter %+v", src.Entry)
	}
	if src.Since != nil || src.SinceUnix != nil || src.ForSeconds != nil || src.WaitedSeconds != nil {
		t.Errorf("unknown times must be null: %v %v %v %v", src.Since, src.SinceUnix, src.ForSeconds, src.WaitedSeconds)
	}
	if w := doc.Waiters[1]; w.Where != WhereMount || w.Path != "scan_001/files.json" || w.WaitedSeconds == nil || *w.WaitedSeconds != 1.5 {
		t.Errorf("mount waiter %+v waited %v", w.Entry, w.WaitedSeconds)
	}
}

// The time layout is RFC 3339 with milliseconds, in the time's own zone;
// a document's times decode to the same instant (to the millisecond).
func TestTimeLayout(t *testing.T) {
	zone := time.FixedZone("", 3600)
	at := time.Date(2025, 11, 28, 10, 1, 2, 345_678_901, zone)
	b, err := json.Marshal(Time{at})
	noErr(t, err)
	if string(b) != `"2025-11-28T10:01:02.345+01:00"` {
		t.Errorf("marshalled %s", b)
	}
	var back Time
	noErr(t, json.Unmarshal(b, &back))
	if !back.Equal(at.Truncate(time.Millisecond)) {
		t.Errorf("decoded %v, want %v", back, at.Truncate(time.Millisecond))
	}
	for _, in := range []string{`"2025-11-28T09:01:02Z"`, `"2025-11-28T09:01:02.123456789Z"`} {
		if err := json.Unmarshal([]byte(in), &back); err != nil {
			t.Errorf("RFC 3339 %s: %v", in, err)
		}
	}
	for _, in := range []string{`"yesterday"`, `12`, `"2025-11-28 09:01:02"`} {
		if err := json.Unmarshal([]byte(in), &back); err == nil {
			t.Errorf("%s decoded as a time", in)
		}
	}
}

// Every documented key is present in every document, also when empty:
// scripts index them without checking. The three documents share the
// scan and entry keys.
func TestRenderedDocumentsHaveEveryKey(t *testing.T) {
	st := &lockmgr.ScanStatus{ScanID: "s", State: "shared",
		Holders: []lockmgr.Holder{{Mode: lockmgr.Shared, PID: 1, Where: lockmgr.WhereProcess}},
		Waiters: []lockmgr.Waiter{{Mode: lockmgr.Exclusive, PID: 2, Where: lockmgr.WhereLocal}}}
	entry := []string{"mode", "pid", "command", "user", "claimed_user", "path", "path_hidden", "where", "hostname",
		"since", "since_unix", "for_seconds", "owner", "note", "note_hidden"}
	scan := []string{"scan_id", "state", "holders", "waiters", "info_error", "lock_error", "cluster_error"}
	checkScan := func(what string, m map[string]any) {
		t.Helper()
		wantKeys(t, what+" holder", m["holders"].([]any)[0].(map[string]any), append(entry, "held_for_seconds")...)
		wantKeys(t, what+" waiter", m["waiters"].([]any)[0].(map[string]any), append(entry, "waited_seconds")...)
	}

	var info map[string]any
	noErr(t, json.Unmarshal(renderInfo(st, nil, testNow), &info))
	wantKeys(t, "info", info, append(scan, "generated_at", "generated_at_unix", "error")...)
	checkScan("info", info)

	var ms map[string]any
	noErr(t, json.Unmarshal(renderMount(MountDoc{}, []*lockmgr.ScanStatus{st}, nil, testNow), &ms))
	wantKeys(t, "status.json", ms, "generated_at", "generated_at_unix", "source", "mountpoint", "lock_dir", "pid",
		"timeout_seconds", "read_only", "scans", "error")
	wantKeys(t, "status.json scan", ms["scans"].([]any)[0].(map[string]any), scan...)
	checkScan("status.json", ms["scans"].([]any)[0].(map[string]any))

	var sd map[string]any
	noErr(t, json.Unmarshal(Encode(SourceDoc{Time: Time{testNow}, Scans: ScansOf([]*lockmgr.ScanStatus{st}, testNow)}), &sd))
	wantKeys(t, "status --json", sd, "source", "lock_dir", "time", "scans")
	wantKeys(t, "status --json scan", sd["scans"].([]any)[0].(map[string]any), scan...)
	checkScan("status --json", sd["scans"].([]any)[0].(map[string]any))
}

func wantKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	keys = slices.Sorted(slices.Values(keys))
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
	if doc.State != StateUnknown || doc.Error != "reading /proc/locks: permission denied" || doc.Holders == nil || doc.Waiters == nil {
		t.Errorf("failed query: %+v", doc)
	}
	if doc := decodeInfo(t, renderInfo(nil, nil, testNow)); doc.State != StateUnknown || doc.Error == "" {
		t.Errorf("no status and no error: %+v", doc)
	}
	if !bytes.HasSuffix(free, []byte("}\n")) {
		t.Errorf("document does not end with a newline: %q", free)
	}
	if s := FromLockmgr(&lockmgr.ScanStatus{ScanID: "s"}, testNow); s.State != StateFree || s.Active() {
		t.Errorf("a status without state: %+v", s)
	}
}

func TestRenderMountDoc(t *testing.T) {
	hdr := MountDoc{Source: "/data/db", Mountpoint: "/mnt/db", LockDir: "/data/db/.locks", PID: 99, TimeoutSeconds: 30}
	list := []*lockmgr.ScanStatus{
		{ScanID: "a", State: "shared", Holders: []lockmgr.Holder{{Mode: lockmgr.Shared, PID: 5, Where: lockmgr.WhereLocal, Note: "a/x"}}},
		nil,
		{ScanID: "b", State: "exclusive", Holders: []lockmgr.Holder{{Mode: lockmgr.Exclusive, PID: 6, Where: lockmgr.WhereProcess}}},
	}
	var ms MountDoc
	noErr(t, json.Unmarshal(renderMount(hdr, list, nil, testNow), &ms))
	if ms.Source != "/data/db" || ms.Mountpoint != "/mnt/db" || ms.PID != 99 || ms.TimeoutSeconds != 30 || !ms.GeneratedAt.Equal(testNow) {
		t.Errorf("header %+v", ms)
	}
	if len(ms.Scans) != 2 || ms.Scans[0].ScanID != "a" || ms.Scans[1].ScanID != "b" ||
		ms.Scans[0].Holders[0].Path != "a/x" || ms.Scans[1].Holders[0].Where != WhereSource {
		t.Errorf("scans %+v", ms.Scans)
	}
	empty := renderMount(hdr, nil, errors.New("boom"), testNow)
	noErr(t, json.Unmarshal(empty, &ms))
	if ms.Scans == nil || len(ms.Scans) != 0 || ms.Error != "boom" {
		t.Errorf("failed listing: %s", empty)
	}
}

// hideAll is a reader that may see nothing of other users.
type hideAll struct{ user string }

func (h hideAll) ShowPath(path, user string) bool { return user == h.user }
func (h hideAll) ShowNote(note, user string) bool { return user == h.user }

// Redact empties and marks what the reader may not see, in holders and
// waiters, and leaves the reader's own holds and the facts (pid, user,
// command) alone.
func TestRedact(t *testing.T) {
	st := &lockmgr.ScanStatus{ScanID: "s", State: "shared",
		Holders: []lockmgr.Holder{
			{Mode: lockmgr.Shared, PID: 5, User: "alice", Command: "cat", Where: lockmgr.WhereLocal, Note: "s/secret"},
			{Mode: lockmgr.Shared, PID: 6, User: "bob", ClaimedUser: "carol", Where: lockmgr.WhereProcess, Note: "run: cat s/x"},
			{Mode: lockmgr.Shared, PID: 7, User: "me", Where: lockmgr.WhereLocal, Note: "s/mine"},
		},
		Waiters: []lockmgr.Waiter{{Mode: lockmgr.Exclusive, PID: 8, User: "alice", Where: lockmgr.WhereLocal, Note: "s/w"}}}
	doc := NewInfoDoc(st, nil, testNow, hideAll{"me"})
	h, p, mine, w := doc.Holders[0], doc.Holders[1], doc.Holders[2], doc.Waiters[0]
	if h.Path != "" || !h.PathHidden || h.NoteHidden || h.PID != 5 || h.User != "alice" || h.Command != "cat" {
		t.Errorf("other user's mount holder: %+v", h.Entry)
	}
	if p.Note != "" || !p.NoteHidden || p.PathHidden || p.ClaimedUser != "carol" || p.User != "bob" {
		t.Errorf("other user's source holder: %+v", p.Entry)
	}
	if mine.Path != "s/mine" || mine.PathHidden {
		t.Errorf("the reader's own holder: %+v", mine.Entry)
	}
	if w.Path != "" || !w.PathHidden {
		t.Errorf("other user's waiter: %+v", w.Entry)
	}
	ms := NewMountDoc(MountDoc{}, []*lockmgr.ScanStatus{st}, nil, testNow, hideAll{"me"})
	if e := ms.Scans[0].Holders[0]; e.Path != "" || !e.PathHidden {
		t.Errorf("status.json holder: %+v", e.Entry)
	}
	if all := NewInfoDoc(st, nil, testNow, nil); all.Holders[0].Path != "s/secret" || all.Holders[1].Note != "run: cat s/x" {
		t.Errorf("nil redactor hid something: %+v", all.Holders)
	}
}

// FuzzRenderInfo: whatever other programs put in their .info files and
// process names (invalid UTF-8, newlines, quotes, NUL), and whatever the
// times, the documents are valid JSON with one entry per holder and
// waiter, valid strings come back unchanged, and so do the documents
// that status reads back (ReadMount).
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
		var got Entry
		if waiting {
			got = doc.Waiters[0].Entry
		} else {
			got = doc.Holders[0].Entry
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
		ms := renderMount(MountDoc{Source: note, Mountpoint: command}, []*lockmgr.ScanStatus{st}, err, at)
		if !json.Valid(ms) {
			t.Fatalf("invalid status.json:\n%s", ms)
		}
	})
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
