package fusefs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"scanlockfs/lockmgr"
	"scanlockfs/scanstatus"
)

// Paths of other users' holds are shown only to those who may list the
// directory they are in (search on every directory from SOURCE down).
func TestRedactorHidesWhatTheViewerCannotList(t *testing.T) {
	src := t.TempDir()
	if err := os.Chmod(src, 0o755); err != nil {
		t.Fatal(err)
	}
	mk := func(rel string, mode os.FileMode, gid int) {
		t.Helper()
		p := filepath.Join(src, rel)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, 0, gid); err != nil {
			t.Fatal(err)
		}
	}
	mk("open", 0o755, 0)
	mk("private", 0o700, 0)
	mk("group", 0o750, 4242)
	mk("open/noread", 0o711, 0)
	fsys := &fileSystem{status: newStatusView(src, "/mnt")}
	stranger := &viewer{uid: 5000, user: "stranger", groups: []uint32{5000}}
	member := &viewer{uid: 5001, user: "member", groups: []uint32{5001, 4242}}
	for _, c := range []struct {
		v          *viewer
		path, user string
		want       bool
	}{
		{stranger, "open/f", "alice", true},
		{stranger, "private/patient_4711.txt", "alice", false},
		{stranger, "private/patient_4711.txt", "stranger", true}, // its own hold
		{stranger, "open/x -> private/y", "alice", false},
		{stranger, "private/y (inherited from pid 10, in pid 11)", "alice", false},
		{stranger, "open/noread/f", "alice", false}, // may search, not read
		{stranger, "group/f", "alice", false},
		{member, "group/f", "alice", true},
		{member, "group/f (inherited from pid 10, in pid 11)", "alice", true},
		{stranger, "rootfile", "alice", true}, // SOURCE itself is listable
	} {
		r := fsys.redactorFor(c.v)
		if got := r.ShowPath(c.path, c.user); got != c.want {
			t.Errorf("%s sees %q of %s: %v, want %v", c.v.user, c.path, c.user, got, c.want)
		}
	}
	if fsys.redactorFor(&viewer{all: true}) != nil {
		t.Error("root gets a redactor")
	}

	// Rendered: the path is "" and path_hidden says so; a note of a
	// process on SOURCE is shown to its own user only.
	st := &lockmgr.ScanStatus{ScanID: "private", State: "shared", Holders: []lockmgr.Holder{
		{Mode: lockmgr.Shared, PID: 5, User: "alice", Where: lockmgr.WhereLocal, Note: "private/patient_4711.txt"},
		{Mode: lockmgr.Shared, PID: 6, User: "bob", ClaimedUser: "carol", Where: lockmgr.WhereProcess, Note: "run: cat private/x"},
	}}
	doc := decodeInfo(t, renderInfo(st, nil, testNow, fsys.redactorFor(stranger)))
	h, p := doc.Holders[0], doc.Holders[1]
	if h.Path != "" || !h.PathHidden || p.Note != "" || !p.NoteHidden || p.ClaimedUser != "carol" || p.User != "bob" {
		t.Errorf("stranger's view: %+v / %+v", h, p)
	}
	doc = decodeInfo(t, renderInfo(st, nil, testNow, fsys.redactorFor(&viewer{all: true})))
	if h := doc.Holders[0]; h.Path != "private/patient_4711.txt" || h.PathHidden {
		t.Errorf("root's view: %+v", h)
	}
}

// testNow is the time of rendered test documents.
var testNow = time.Date(2025, 11, 28, 9, 1, 2, 500_000_000, time.UTC)

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func decodeInfo(t *testing.T, b []byte) scanstatus.InfoDoc {
	t.Helper()
	var doc scanstatus.InfoDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not an InfoDoc: %v\n%s", err, b)
	}
	return doc
}
