package lockmgr

import (
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// TestDebugLogging: with debug logging on, every attempt, grant and
// release is logged with the scan, mode and owner, and grants with how
// long they waited (plantdb promises as much).
func TestDebugLogging(t *testing.T) {
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	m := newManager(t, "", WithLogger(log))
	l := mustAcquire(t, m, "s", Exclusive, testOwner("a"))
	if _, err := m.TryAcquire("s", Shared, testOwner("b")); err == nil {
		t.Fatal("b got the lock")
	}
	mustRelease(t, l)

	want := []struct {
		msg   string
		owner string
		extra string
	}{
		{"scan lock attempt", "tester/a", ""},
		{"scan lock granted", "tester/a", "waited"},
		{"scan lock attempt", "tester/b", ""},
		{"scan lock refused", "tester/b", "waited"},
		{"scan lock released", "tester/a", "held"},
	}
	got := hook.AllEntries()
	if len(got) != len(want) {
		for _, e := range got {
			t.Logf("%s %v", e.Message, e.Data)
		}
		t.Fatalf("%d log entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		e := got[i]
		if e.Message != w.msg || e.Level != logrus.DebugLevel || e.Data["scan"] != "s" || e.Data["owner"] != w.owner || e.Data["mode"] == nil {
			t.Errorf("entry %d: %s %s %v, want %q by %s", i, e.Level, e.Message, e.Data, w.msg, w.owner)
		}
		if _, ok := e.Data[w.extra]; w.extra != "" && !ok {
			t.Errorf("entry %d (%s) lacks %q", i, e.Message, w.extra)
		}
	}

	// Without debug level nothing is logged on the fast path.
	hook.Reset()
	log.SetLevel(logrus.InfoLevel)
	quiet := newManager(t, "", WithLogger(log))
	mustRelease(t, mustAcquire(t, quiet, "s", Shared, testOwner("a")))
	if n := len(hook.AllEntries()); n != 0 {
		t.Errorf("%d entries at info level", n)
	}
}
