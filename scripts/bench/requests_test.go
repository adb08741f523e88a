package main

import (
	"errors"
	"testing"
)

func TestParseRequestMetrics(t *testing.T) {
	doc := []byte(`# HELP scanlockfs_opens_total Files opened or created through the mount.
scanlockfs_opens_total 7
# TYPE scanlockfs_fuse_requests_total counter
scanlockfs_fuse_requests_total{op="FLUSH"} 0
scanlockfs_fuse_requests_total{op="LOOKUP"} 31
scanlockfs_fuse_requests_total{op="OPEN"} 12
`)
	got, err := parseRequestMetrics(doc)
	if err != nil {
		t.Fatal(err)
	}
	if want := (reqCounts{"FLUSH": 0, "LOOKUP": 31, "OPEN": 12}); !got.equal(want) || len(got) != 3 {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := parseRequestMetrics([]byte("scanlockfs_opens_total 7\n")); !errors.Is(err, errNoRequestCounts) {
		t.Errorf("a document without request counts: %v", err)
	}
	if _, err := parseRequestMetrics([]byte(`scanlockfs_fuse_requests_total{op="OPEN"} x` + "\n")); err == nil {
		t.Error("a bad sample was accepted")
	}
}

// A part's requests are the difference of the counts around it, less
// what the readings in between cost.
func TestRequestsOfAPart(t *testing.T) {
	before := reqCounts{"OPEN": 10, "READ": 20, "RELEASE": 9}
	after := reqCounts{"OPEN": 113, "READ": 26, "RELEASE": 112, "LOOKUP": 4}
	cost := reqCounts{"OPEN": 1, "READ": 2, "RELEASE": 1}
	got := after.minus(before).minus(cost.times(3))
	want := reqCounts{"OPEN": 100, "RELEASE": 100, "LOOKUP": 4}
	if !got.equal(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	rp := newReport()
	rp.define(sectionFS, "1a", "open+close", "µs/op", false, goal{}).countRequests("open")
	rp.addRequests("1a", vScanlockfs, got, 100)
	rp.addRequests("1a", vScanlockfs, reqCounts{"OPEN": 100, "RELEASE": 100, "LOOKUP": -1}, 100)
	tally := rp.byID["1a"].reqs[vScanlockfs]
	if s := reqCell(tally); s != "2.02: OPEN 1, RELEASE 1, LOOKUP 0.02" {
		t.Errorf("cell %q", s)
	}
	if s := tally.csv(); s != "LOOKUP=0.02 OPEN=1 RELEASE=1" {
		t.Errorf("CSV %q", s)
	}
	if s := reqCell(&reqTally{counts: reqCounts{}, ops: 5}); s != "0" {
		t.Errorf("no request: %q", s)
	}
}
