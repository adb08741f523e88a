package lockmgr

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestStatusFree(t *testing.T) {
	m := newManager(t, "")
	for _, id := range []string{"never-seen", "used"} {
		if id == "used" {
			mustRelease(t, mustAcquire(t, m, id, Exclusive, testOwner("a")))
		}
		st, err := m.Status(id)
		if err != nil {
			t.Fatalf("Status(%s): %v", id, err)
		}
		if st.State != "free" || st.Active() || st.ScanID != id || st.Holders == nil || st.Waiters == nil {
			t.Errorf("Status(%s) = %+v, want free with empty lists", id, st)
		}
	}
}

func TestStatusLocal(t *testing.T) {
	m := newManager(t, "")
	a := Owner{User: "alice", Key: "pid:1", PID: 1, Note: "cat files.json"}
	b := Owner{User: "bob", Key: "pid:2", PID: 2}
	la := mustAcquire(t, m, "s", Shared, a)
	lb := mustAcquire(t, m, "s", Shared, b)
	w := goAcquire(t, m, context.Background(), "s", Exclusive, testOwner("writer"))
	st, err := m.Status("s")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "shared" || len(st.Holders) != 2 || len(st.Waiters) != 1 {
		t.Fatalf("Status = %+v", st)
	}
	h := st.Holders[0]
	if h.User != "alice" || h.Owner != "pid:1" || h.PID != 1 || h.Note != "cat files.json" || h.Where != WhereLocal || h.Mode != Shared {
		t.Errorf("first holder %+v", h)
	}
	if wt := st.Waiters[0]; wt.Mode != Exclusive || wt.Owner != "writer" || wt.PID != os.Getpid() {
		t.Errorf("waiter %+v", wt)
	}
	mustRelease(t, la)
	mustRelease(t, lb)
	r := get(t, w)
	if st, _ = m.Status("s"); st.State != "exclusive" {
		t.Errorf("state %q while the writer holds", st.State)
	}
	mustRelease(t, r.l)
}

// TestStatusOtherProcesses: holders in other processes come from
// /proc/locks, joined with .info for the user.
func TestStatusOtherProcesses(t *testing.T) {
	root := t.TempDir()
	m := newManager(t, root)
	h := startHelper(t, root, "infodelay=0,user=alice")
	h.ok("try ex exclusive")
	peer := startPeer(t, "hold", root, "sh", "--mode", "shared", "--user", "bob")
	if line := peer.recv(); !strings.HasPrefix(line, "granted") {
		t.Fatalf("peer: %q", line)
	}
	defer peer.send("release")
	mustRelease(t, mustAcquire(t, m, "free", Shared, testOwner("a")))

	for _, tt := range []struct {
		id, state, user string
		pid             int
		mode            Mode
	}{
		{"ex", "exclusive", "alice", h.pid, Exclusive},
		{"sh", "shared", "bob", peer.pid, Shared},
	} {
		st, err := m.Status(tt.id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != tt.state || len(st.Holders) != 1 {
			t.Fatalf("Status(%s) = %+v", tt.id, st)
		}
		got := st.Holders[0]
		// The .info's user is a claim; the user is the process's.
		if got.PID != tt.pid || got.Mode != tt.mode || got.Where != WhereProcess || got.ClaimedUser != tt.user ||
			got.User != UserNameOf(uint32(os.Getuid())) || got.Since.IsZero() {
			t.Errorf("Status(%s) holder %+v, want pid %d %v user %s claimed %s with a time", tt.id, got, tt.pid, tt.mode, UserNameOf(uint32(os.Getuid())), tt.user)
		}
		if got.Command == "" {
			t.Errorf("Status(%s): no command name for pid %d", tt.id, got.PID)
		}
	}

	list, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, st := range list {
		ids = append(ids, st.ScanID)
	}
	if strings.Join(ids, ",") != "ex,sh" {
		t.Errorf("List() = %v, want [ex sh] (sorted, held ones only)", ids)
	}
}

func TestParseProcLocks(t *testing.T) {
	data := []byte(`1: FLOCK  ADVISORY  WRITE 1234 fe:00:7864554 0 EOF
2: FLOCK  ADVISORY  READ 99 08:11:42 0 EOF
2: -> FLOCK  ADVISORY  WRITE 100 08:11:42 0 EOF
3: POSIX  ADVISORY  WRITE 5 00:1a:3 0 EOF
4: OFDLCK ADVISORY  READ  -1 00:06:9 0 EOF
garbage
`)
	got := parseProcLocks(data)
	if len(got) != 5 {
		t.Fatalf("parsed %d locks, want 5: %+v", len(got), got)
	}
	first := got[0]
	if first.kind != "FLOCK" || first.mode != Exclusive || first.pid != 1234 || first.file.ino != 7864554 || first.blocked {
		t.Errorf("first %+v", first)
	}
	if w := got[2]; !w.blocked || w.pid != 100 || w.mode != Exclusive {
		t.Errorf("blocked %+v", w)
	}
	if got[1].file != got[2].file {
		t.Error("same dev:inode parsed differently")
	}
}
