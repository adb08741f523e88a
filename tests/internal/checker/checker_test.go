package checker

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// logOf writes events with Log, one file per process, and parses them
// back, so that every test goes through the real format.
func logOf(t *testing.T, lines func(logs map[string]*Log)) []Event {
	t.Helper()
	dir := t.TempDir()
	logs := map[string]*Log{}
	for _, p := range []string{"p1", "p2", "p3"} {
		l, err := Create(filepath.Join(dir, p+".log"), p)
		if err != nil {
			t.Fatal(err)
		}
		logs[p] = l
	}
	lines(logs)
	var all []Event
	for p, l := range logs {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		evs, errs := ParseFile(filepath.Join(dir, p+".log"))
		if len(errs) > 0 {
			t.Fatalf("parse %s: %v", p, errs)
		}
		all = append(all, evs...)
	}
	return all
}

// hold records one complete grant: wanted at w, held over [b, e].
func hold(l *Log, seq uint64, scan, mode string, w, b, e int64, read, wrote int) {
	l.Want(seq, scan, mode, w)
	l.Begin(seq, scan, mode, b)
	l.End(seq, scan, mode, e, read, wrote)
}

func wantKinds(t *testing.T, r *Report, kinds map[string]int) {
	t.Helper()
	for k, n := range kinds {
		if r.ByKind[k] != n {
			t.Errorf("%s violations: %d, want %d\n%s", k, r.ByKind[k], n, r.Summary())
		}
	}
	total := 0
	for _, n := range kinds {
		total += n
	}
	if r.ViolationCount() != total {
		t.Errorf("%d violations, want %d\n%s", r.ViolationCount(), total, r.Summary())
	}
}

func TestCleanHistoryHasNoViolation(t *testing.T) {
	evs := logOf(t, func(l map[string]*Log) {
		// Two readers overlap, then a writer, then a reader sees its value;
		// another scan is written at the same time.
		hold(l["p1"], 1, "a", Shared, 100, 110, 200, 0, None)
		hold(l["p2"], 1, "a", Shared, 105, 120, 190, 0, None)
		hold(l["p3"], 1, "a", Exclusive, 150, 201, 300, 0, 1)
		hold(l["p1"], 2, "a", Shared, 210, 300, 350, 1, None) // touching: ends == begins is not an overlap
		hold(l["p2"], 2, "b", Exclusive, 150, 150, 400, 5, 6)
		hold(l["p3"], 2, "a", Exclusive, 301, 360, 370, 1, 2)
		l["p3"].Want(3, "a", Exclusive, 380)
		l["p3"].Fail(3, "a", Exclusive, 390, "EBUSY")
	})
	r := Check(evs, map[string]Counter{"a": {Initial: 0, Final: 2}, "b": {Initial: 5, Final: 6}})
	wantKinds(t, r, nil)
	if r.Ops != 6 || r.Exclusive != 3 || r.Shared != 3 || r.Increments != 3 || r.Processes != 3 {
		t.Errorf("counts: %+v", r)
	}
	if r.FailureCount() != 1 || r.Failures["EBUSY"] != 1 {
		t.Errorf("failures: %v", r.Failures)
	}
	if len(r.Waits) != 6 || r.Percentile(100) != 90 || r.Percentile(50) != 15 {
		t.Errorf("waits %v, p50 %v, max %v", r.Waits, r.Percentile(50), r.Percentile(100))
	}
}

func TestDetectsOverlaps(t *testing.T) {
	cases := []struct {
		name  string
		m1    string
		b1    int64
		e1    int64
		m2    string
		b2    int64
		e2    int64
		scan2 string
		want  int
	}{
		{"exclusive in exclusive", Exclusive, 10, 100, Exclusive, 50, 60, "a", 1},
		{"exclusive across the end of exclusive", Exclusive, 10, 100, Exclusive, 99, 200, "a", 1},
		{"shared during exclusive", Exclusive, 10, 100, Shared, 20, 30, "a", 1},
		{"exclusive during shared", Shared, 10, 100, Exclusive, 20, 130, "a", 1},
		{"same begin", Exclusive, 10, 20, Exclusive, 10, 20, "a", 1},
		{"shared with shared", Shared, 10, 100, Shared, 20, 30, "a", 0},
		{"exclusive on another scan", Exclusive, 10, 100, Exclusive, 20, 30, "b", 0},
		{"one after the other", Exclusive, 10, 100, Exclusive, 100, 130, "a", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			evs := logOf(t, func(l map[string]*Log) {
				hold(l["p1"], 1, "a", c.m1, c.b1, c.b1, c.e1, None, None)
				hold(l["p2"], 1, c.scan2, c.m2, c.b2, c.b2, c.e2, None, None)
			})
			wantKinds(t, Check(evs, nil), map[string]int{Overlap: c.want})
		})
	}
}

// An overlap with an interval that is not the one that ends last is
// found too: the sweep keeps every interval still running.
func TestDetectsOverlapHiddenBehindLongerInterval(t *testing.T) {
	evs := logOf(t, func(l map[string]*Log) {
		hold(l["p1"], 1, "a", Shared, 1, 1, 1000, None, None)
		hold(l["p2"], 1, "a", Shared, 10, 10, 500, None, None)
		hold(l["p3"], 1, "a", Exclusive, 20, 900, 950, None, None) // overlaps p1 only
		hold(l["p3"], 2, "a", Shared, 960, 960, 970, None, None)   // overlaps p1 (shared): fine
	})
	r := Check(evs, nil)
	wantKinds(t, r, map[string]int{Overlap: 1})
	if !strings.Contains(r.Violations[0].Detail, "p1#1") || !strings.Contains(r.Violations[0].Detail, "p3#1") {
		t.Errorf("overlap names the wrong intervals: %s", r.Violations[0])
	}
}

func TestDetectsUnreleasedGrant(t *testing.T) {
	evs := logOf(t, func(l map[string]*Log) {
		hold(l["p1"], 1, "a", Exclusive, 1, 2, 3, None, None)
		l["p2"].Want(1, "a", Exclusive, 4)
		l["p2"].Begin(1, "a", Exclusive, 5) // killed while holding
		l["p3"].Want(1, "a", Shared, 6)     // killed while waiting: not a grant
	})
	r := Check(evs, nil)
	wantKinds(t, r, map[string]int{Unreleased: 1})
	if !strings.Contains(r.Violations[0].Detail, "p2#1") {
		t.Errorf("unreleased names %s", r.Violations[0])
	}
}

func TestDetectsWrongCounts(t *testing.T) {
	t.Run("final value", func(t *testing.T) {
		evs := logOf(t, func(l map[string]*Log) {
			hold(l["p1"], 1, "a", Exclusive, 1, 2, 3, 0, 1)
			hold(l["p2"], 1, "a", Exclusive, 1, 4, 5, 1, 2)
		})
		wantKinds(t, Check(evs, map[string]Counter{"a": {Initial: 0, Final: 3}}), map[string]int{Count: 1})
		wantKinds(t, Check(evs, map[string]Counter{"a": {Initial: 0, FinalErr: errors.New("torn")}}), map[string]int{Count: 1})
		wantKinds(t, Check(evs, map[string]Counter{"a": {Initial: 0, Final: 2}}), nil)
	})
	t.Run("lost update", func(t *testing.T) {
		// Both writers read 0: one increment is lost, and the file shows it.
		evs := logOf(t, func(l map[string]*Log) {
			hold(l["p1"], 1, "a", Exclusive, 1, 2, 3, 0, 1)
			hold(l["p2"], 1, "a", Exclusive, 1, 4, 5, 0, 1)
		})
		wantKinds(t, Check(evs, map[string]Counter{"a": {Initial: 0, Final: 1}}), map[string]int{LostUpdate: 1, Count: 1})
	})
	t.Run("bad increment", func(t *testing.T) {
		evs := logOf(t, func(l map[string]*Log) {
			hold(l["p1"], 1, "a", Exclusive, 1, 2, 3, 0, 2)
		})
		wantKinds(t, Check(evs, map[string]Counter{"a": {Initial: 0, Final: 2}}), map[string]int{LostUpdate: 1, Count: 1})
	})
	t.Run("stale read", func(t *testing.T) {
		evs := logOf(t, func(l map[string]*Log) {
			hold(l["p1"], 1, "a", Exclusive, 1, 2, 3, 7, 8)
			hold(l["p2"], 1, "a", Shared, 1, 4, 5, 7, None)      // stale: 8 was written before
			hold(l["p3"], 1, "a", Shared, 1, 1, 2, 7, None)      // before the increment: 7 is right
			hold(l["p3"], 2, "a", Shared, 5, 6, 9, 8, None)      // after: 8 is right
			hold(l["p2"], 2, "a", Shared, 9, 10, 11, Torn, None) // half-written
		})
		wantKinds(t, Check(evs, map[string]Counter{"a": {Initial: 7, Final: 8}}), map[string]int{StaleRead: 1, TornRead: 1})
	})
	t.Run("written under a shared lock", func(t *testing.T) {
		evs := logOf(t, func(l map[string]*Log) {
			hold(l["p1"], 1, "a", Shared, 1, 2, 3, 0, 1)
		})
		wantKinds(t, Check(evs, nil), map[string]int{Malformed: 1})
	})
}

func TestDetectsMalformedSequences(t *testing.T) {
	evs := logOf(t, func(l map[string]*Log) {
		l["p1"].End(1, "a", Exclusive, 5, None, None) // end without begin
		l["p2"].Begin(1, "a", Exclusive, 10)
		l["p2"].End(1, "a", Exclusive, 9, None, None) // ends before it begins
		l["p3"].Want(1, "a", Shared, 20)
		l["p3"].Begin(1, "a", Shared, 19) // granted before wanted
		l["p3"].End(1, "a", Shared, 21, None, None)
		hold(l["p1"], 2, "a", Shared, 30, 31, 32, None, None)
		l["p1"].Begin(2, "a", Shared, 33) // seq reused
	})
	wantKinds(t, Check(evs, nil), map[string]int{Malformed: 4})
}

func TestParse(t *testing.T) {
	evs := logOf(t, func(l map[string]*Log) {
		hold(l["p1"], 7, "odd scan \"x\"\n\xff", Exclusive, 1, 2, 3, Torn, 4)
		l["p1"].Fail(8, "a", Shared, 4, "no such file")
	})
	if len(evs) != 4 || evs[0].Scan != "odd scan \"x\"\n\xff" || evs[2].Read != Torn || evs[2].Wrote != 4 ||
		evs[3].Err != "no_such_file" || evs[1].Seq != 7 || evs[1].T != 2 {
		t.Fatalf("round trip: %+v", evs)
	}
	for _, bad := range []string{
		"begin p1 1 \"a\" shared",
		"begin p1 x \"a\" shared 5",
		"begin p1 1 a shared 5",
		"begin p1 1 \"a\" mostly 5",
		"begin p1 1 \"a\" shared -5",
		"begin p1 1 \"a\" shared 5 6",
		"end p1 1 \"a\" shared 5 1",
		"end p1 1 \"a\" shared 5 -3 1",
		"hold p1 1 \"a\" shared 5",
	} {
		if _, errs := Parse(strings.NewReader(bad + "\n")); len(errs) != 1 {
			t.Errorf("%q: errors %v, want one", bad, errs)
		}
	}
}

func TestCounterContent(t *testing.T) {
	for _, n := range []int{0, 1, 9, 10, 123, 100000} {
		b := CounterContent(n)
		got, err := ParseCounter(b)
		if err != nil || got != n {
			t.Fatalf("ParseCounter(CounterContent(%d)) = %d, %v", n, got, err)
		}
		for _, torn := range [][]byte{b[:len(b)/2], append(CounterContent(n + 1)[:len(b)/2:len(b)/2], b[len(b)/2:]...)} {
			if _, err := ParseCounter(torn); err == nil {
				t.Fatalf("a torn counter for %d parsed", n)
			}
		}
	}
	if n, err := ParseCounter(nil); n != 0 || err != nil {
		t.Fatalf("empty counter: %d, %v", n, err)
	}
}

func TestSummaryNamesViolations(t *testing.T) {
	evs := logOf(t, func(l map[string]*Log) {
		hold(l["p1"], 1, "a", Exclusive, 1, 2, 30, None, None)
		hold(l["p2"], 1, "a", Exclusive, 1, 20, 40, None, None)
	})
	s := Check(evs, nil).Summary()
	for _, w := range []string{"operations: 2", "violations: 1 (overlap=1)", "p1#1", "p2#1", "wait: p50"} {
		if !strings.Contains(s, w) {
			t.Errorf("summary lacks %q:\n%s", w, s)
		}
	}
}
