package mountcmd

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
	"scanlockfs/scanstatus"
)

// TestStatusAsReadOnlyUser: status needs only read access to SOURCE. User
// nobody, who may not write anything in the tree, sees the holder of a
// scan (exit 0), and the tree does not change.
func TestStatusAsReadOnlyUser(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t, "to switch to an unprivileged user")
	const nobody = 65534
	// The test binary's own directories are private to root: copy it
	// where the unprivileged user can run it.
	dir, err := os.MkdirTemp("", "scanlockfs-status-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	self, err := os.Executable()
	must(t, err)
	bin := filepath.Join(dir, "scanlockfs")
	must(t, copyFile(self, bin, 0o755))
	db := filepath.Join(dir, "db")
	must(t, os.MkdirAll(filepath.Join(db, "scan_001"), 0o755))

	// The holder writes the pid of its scanlockfs run (its parent).
	held, rel := filepath.Join(dir, "held"), filepath.Join(dir, "release")
	hc := exec.Command("scanlockfs", "run", "--exclusive", db, "scan_001", "--", "sh", "-c",
		`echo $PPID > "$1.tmp"; mv "$1.tmp" "$1"; while [ ! -e "$2" ]; do sleep 0.01; done`, "sh", held, rel)
	hc.Stderr = os.Stderr
	holder := startBg(t, hc)
	waitForFile(t, held, holder)
	holderPID := readNanos(t, held)
	defer func() {
		must(t, os.WriteFile(rel, nil, 0o644))
		waitExit(t, holder, "holder")
	}()
	before := testutil.TreeSnapshot(t, db)

	c := exec.Command(bin, "status", "--json", db, "scan_001")
	c.Dir = "/"
	c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent"}
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stderr []byte
	out, err := c.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	if err != nil {
		t.Fatalf("status as nobody: %v\n%s%s", err, out, stderr)
	}
	var doc scanstatus.SourceDoc
	must(t, json.Unmarshal(out, &doc))
	if len(doc.Scans) != 1 || doc.Scans[0].State != "exclusive" || len(doc.Scans[0].Holders) != 1 {
		t.Fatalf("status as nobody does not show the holder:\n%s", out)
	}
	if pid := doc.Scans[0].Holders[0].PID; int64(pid) != holderPID {
		t.Errorf("holder pid %d, want %d", pid, holderPID)
	}
	if after := testutil.TreeSnapshot(t, db); after != before {
		t.Errorf("status as nobody changed the tree:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// The .info user is a claim: the table shows it as such beside the real
// user, and a note of any size is cut, escaped, to one bounded line.
func TestStatusTableClaimsAndLongNotes(t *testing.T) {
	now := time.Now()
	note := "x\x1b[2J" + strings.Repeat("n", 10<<20)
	list := scanstatus.ScansOf([]*lockmgr.ScanStatus{{ScanID: "s", State: "exclusive", Holders: []lockmgr.Holder{
		{Mode: lockmgr.Exclusive, PID: 7, User: "mallory", ClaimedUser: "alice", Note: note, Where: lockmgr.WhereProcess},
		{Mode: lockmgr.Exclusive, PID: 8, ClaimedUser: "bob", Where: lockmgr.WhereProcess},
		{Mode: lockmgr.Exclusive, PID: 9, User: "carol", ClaimedUser: "carol", Where: lockmgr.WhereProcess},
	}}}, now)
	var b strings.Builder
	must(t, writeStatusTable(&b, "/db", list, now))
	out := b.String()
	if len(out) > 4096 {
		t.Fatalf("a 10 MB note gives %d bytes of table", len(out))
	}
	for _, want := range []string{"mallory, alice (claimed)", "bob (claimed)", `\x1b[2J`, "bytes more"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") || strings.Contains(out, "carol (claimed)") {
		t.Errorf("table:\n%s", out)
	}
	var j strings.Builder
	must(t, writeStatusJSON(&j, "/db", "/db/.locks", list, now))
	var doc scanstatus.SourceDoc
	must(t, json.Unmarshal([]byte(j.String()), &doc))
	if e := doc.Scans[0].Holders[0]; e.User != "mallory" || e.ClaimedUser != "alice" || e.Where != scanstatus.WhereSource {
		t.Errorf("JSON entry %+v", e)
	}
}

// A running mount's programs replace its daemon in status: the mount's
// entries on SOURCE (which status found itself) are not added twice, and
// the table shows a program's path as its note, or that it is hidden.
func TestStatusMergesMountPrograms(t *testing.T) {
	now := time.Now()
	const daemon = 100
	list := scanstatus.ScansOf([]*lockmgr.ScanStatus{{ScanID: "s", State: "exclusive",
		Holders: []lockmgr.Holder{{Mode: lockmgr.Exclusive, PID: daemon, Where: lockmgr.WhereProcess}},
		Waiters: []lockmgr.Holder{
			{Mode: lockmgr.Shared, PID: daemon, Where: lockmgr.WhereProcess},
			{Mode: lockmgr.Shared, PID: 7, Command: "flock", Where: lockmgr.WhereProcess},
		}}}, now)
	mount := scanstatus.NewMountDoc(scanstatus.MountDoc{PID: daemon}, []*lockmgr.ScanStatus{{ScanID: "s", State: "exclusive",
		Holders: []lockmgr.Holder{{Mode: lockmgr.Exclusive, PID: 11, Command: "cp", User: "alice", Where: lockmgr.WhereLocal,
			Note: "s/files.json", Since: now}},
		Waiters: []lockmgr.Holder{
			{Mode: lockmgr.Shared, PID: 12, Command: "cat", User: "bob", Where: lockmgr.WhereLocal, Note: "s/secret"},
			{Mode: lockmgr.Shared, PID: 7, Command: "flock", Where: lockmgr.WhereProcess},
		}}}, nil, now, hideFrom{"bob"})
	mergeMount(&list[0], &mount.Scans[0], mount.PID)
	s := list[0]
	if len(s.Holders) != 1 || s.Holders[0].PID != 11 || s.Holders[0].Where != scanstatus.WhereMount || s.Holders[0].Path != "s/files.json" {
		t.Errorf("holders after the merge: %+v", s.Holders)
	}
	if len(s.Waiters) != 2 || s.Waiters[0].PID != 7 || s.Waiters[1].PID != 12 || !s.Waiters[1].PathHidden {
		t.Errorf("waiters after the merge: %+v", s.Waiters)
	}
	var b strings.Builder
	must(t, writeStatusTable(&b, "/db", list, now))
	for _, want := range []string{"s/files.json", "(hidden from you)", "mount", "source"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "s/secret") {
		t.Errorf("table shows a hidden path:\n%s", b.String())
	}
}

// hideFrom hides the paths of user's holds.
type hideFrom struct{ user string }

func (h hideFrom) ShowPath(path, user string) bool { return user != h.user }
func (h hideFrom) ShowNote(note, user string) bool { return user != h.user }
