package tests

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"scanlockfs/internal/procfs"
	"scanlockfs/internal/testutil/promtext"
	"scanlockfs/lockmgr"
	"scanlockfs/scanstatus"
)

// Helpers for the tests of the status view MOUNTPOINT/.locks. The files
// are read by real programs (cat, python3) where the test is about what
// a user sees, and with os.ReadFile (this process is a client of the
// mount, never its server) where a test polls.

// statusPath returns the path of name in the mount's status view.
func (d *daemon) statusPath(name string) string { return filepath.Join(d.mnt, ".locks", name) }

// decodeStrict decodes a status document, refusing keys the schema in
// package scanstatus does not know.
func decodeStrict(t *testing.T, what string, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s is not the documented JSON: %v\n%s", what, err, b)
	}
}

// catInfo reads .locks/SCAN.info with cat.
func (d *daemon) catInfo(t *testing.T, scan string) scanstatus.InfoDoc {
	t.Helper()
	var doc scanstatus.InfoDoc
	decodeStrict(t, scan+".info", []byte(run(t, "cat", d.statusPath(scan+".info"))), &doc)
	return doc
}

// info reads .locks/SCAN.info in this process.
func (d *daemon) info(t *testing.T, scan string) scanstatus.InfoDoc {
	t.Helper()
	b, err := os.ReadFile(d.statusPath(scan + ".info"))
	must(t, err)
	var doc scanstatus.InfoDoc
	decodeStrict(t, scan+".info", b, &doc)
	return doc
}

// mountStatus reads .locks/status.json in this process.
func (d *daemon) mountStatus(t *testing.T) scanstatus.MountDoc {
	t.Helper()
	b, err := os.ReadFile(d.statusPath("status.json"))
	must(t, err)
	var st scanstatus.MountDoc
	decodeStrict(t, "status.json", b, &st)
	return st
}

// metrics reads and parses .locks/metrics as Prometheus does.
func (d *daemon) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	b, err := os.ReadFile(d.statusPath("metrics"))
	must(t, err)
	return promtext.Parse(t, b)
}

// metricValue is the value of the counter or gauge name whose labels are
// exactly labels (name, value pairs), or the sample count of a histogram.
var metricValue = promtext.Value

// waitInfo polls SCAN.info until ok accepts it (release is asynchronous,
// and processes on SOURCE write their .info file a moment after their
// flock).
func (d *daemon) waitInfo(t *testing.T, scan, what string, ok func(scanstatus.InfoDoc) bool) scanstatus.InfoDoc {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		doc := d.info(t, scan)
		if ok(doc) {
			return doc
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s.info never showed %s; last:\n%+v", scan, what, doc)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitMetric polls until metric name{labels} has value want.
func (d *daemon) waitMetric(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		got := metricValue(t, d.metrics(t), name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%q = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lsLocks lists .locks with ls.
func (d *daemon) lsLocks(t *testing.T) []string {
	t.Helper()
	return strings.Fields(run(t, "ls", d.mnt+"/.locks"))
}

// userName is the name the mount reports for processes of this user.
func userName() string { return lockmgr.UserNameOf(uint32(os.Getuid())) }

// comm is the command name of pid, as the status view reports it.
func comm(t *testing.T, pid int) string {
	t.Helper()
	c, err := procfs.ReadComm(pid)
	must(t, err)
	return c
}

// checkEntry checks the fields of a holder or waiter that the test knows.
func checkEntry(t *testing.T, what string, e scanstatus.Entry, pid int, mode string, where scanstatus.Where, path string) {
	t.Helper()
	if e.PID != pid || e.Mode != mode || e.Where != where || e.Path != path || e.Host != "" {
		t.Errorf("%s: pid %d mode %s where %s path %q host %q; want pid %d mode %s where %s path %q, this host",
			what, e.PID, e.Mode, e.Where, e.Path, e.Host, pid, mode, where, path)
	}
	if want := comm(t, pid); e.Command != want {
		t.Errorf("%s: command %q, want %q", what, e.Command, want)
	}
	if e.Since == nil || e.SinceUnix == nil || e.ForSeconds == nil {
		t.Errorf("%s: since unknown", what)
		return
	}
	// The document's time decoded as RFC 3339 (scanstatus.Time).
	since := e.Since.Time
	if d := time.Since(since); d < -time.Second || d > waitLimit+time.Minute {
		t.Errorf("%s: since %s is not around now", what, since)
	}
	if u := time.UnixMilli(int64(math.Round(*e.SinceUnix * 1000))); !u.Equal(since) {
		t.Errorf("%s: since_unix %v and since %s differ", what, *e.SinceUnix, since)
	}
}

// pythonLoads has python3 parse path with json.load and print the
// number of holders and waiters of each scan, "scan holders waiters"
// lines (one document for a .info file, every scan for status.json).
func pythonLoads(t *testing.T, path string) string {
	t.Helper()
	return run(t, "python3", "-c", `import json, sys
d = json.load(open(sys.argv[1]))
for s in d.get("scans", [d]):
    print(s["scan_id"], len(s["holders"]), len(s["waiters"]))`, path)
}
