package fusefs

import (
	"math"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"scanlockfs/internal/testutil/promtext"
	"scanlockfs/lockmgr"
)

func TestRenderMetricsParsesWithValues(t *testing.T) {
	in := metricsInput{
		lock: lockmgr.Stats{GrantsShared: 7, GrantsExclusive: 3, Timeouts: 2, WouldBlock: 1, Deadlocks: 4,
			Cancelled: 5, OtherErrors: 6, WaitSum: 2500 * time.Millisecond, Holders: 9, Waiters: 11, Scans: 2,
			Replaced: 12, LostLockFiles: 13, InfoWrites: 14},
		fs:            Stats{Opens: 21, Reads: 22, Writes: 23},
		errnos:        map[syscall.Errno]uint64{syscall.EBUSY: 2, syscall.ESHUTDOWN: 1},
		requests:      map[string]uint64{"LOOKUP": 31, "FLUSH": 0},
		dirFDs:        32,
		invalidations: 33,
		openFDs:       17,
		goroutines:    40,
		started:       testNow,
	}
	// 1 grant within 100µs, 2 within 10ms, 3 over a minute.
	in.lock.WaitCounts[0], in.lock.WaitCounts[2], in.lock.WaitCounts[len(lockmgr.WaitBuckets)] = 1, 2, 3
	fams := promtext.Parse(t, renderMetrics(in))

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"scanlockfs_lock_grants_total", []string{"mode", "shared"}, 7},
		{"scanlockfs_lock_grants_total", []string{"mode", "exclusive"}, 3},
		{"scanlockfs_lock_refusals_total", []string{"reason", "timeout"}, 2},
		{"scanlockfs_lock_refusals_total", []string{"reason", "would_block"}, 1},
		{"scanlockfs_lock_refusals_total", []string{"reason", "deadlock"}, 4},
		{"scanlockfs_lock_refusals_total", []string{"reason", "cancelled"}, 5},
		{"scanlockfs_lock_refusals_total", []string{"reason", "other"}, 6},
		{"scanlockfs_lock_errno_total", []string{"errno", "EBUSY"}, 2},
		{"scanlockfs_lock_errno_total", []string{"errno", "EAGAIN"}, 0},
		{"scanlockfs_lock_errno_total", []string{"errno", "EINTR"}, 0},
		{"scanlockfs_lock_errno_total", []string{"errno", "EDEADLK"}, 0},
		{"scanlockfs_lock_errno_total", []string{"errno", "ESHUTDOWN"}, 1},
		{"scanlockfs_lock_holders", nil, 9},
		{"scanlockfs_lock_waiters", nil, 11},
		{"scanlockfs_lock_scans_active", nil, 2},
		{"scanlockfs_lock_files_replaced_total", nil, 12},
		{"scanlockfs_lock_files_lost_total", nil, 13},
		{"scanlockfs_info_writes_total", nil, 14},
		{"scanlockfs_opens_total", nil, 21},
		{"scanlockfs_daemon_reads_total", nil, 22},
		{"scanlockfs_daemon_writes_total", nil, 23},
		{"scanlockfs_fuse_requests_total", []string{"op", "LOOKUP"}, 31},
		{"scanlockfs_fuse_requests_total", []string{"op", "FLUSH"}, 0},
		{"scanlockfs_dir_fds", nil, 32},
		{"scanlockfs_cache_invalidations_total", nil, 33},
		{"process_open_fds", nil, 17},
		{"go_goroutines", nil, 40},
		{"process_start_time_seconds", nil, 1764320462.5},
	} {
		if got := promtext.Value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%q = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	h := fams["scanlockfs_lock_wait_seconds"]
	if h == nil || h.GetType() != dto.MetricType_HISTOGRAM || len(h.GetMetric()) != 1 {
		t.Fatalf("wait histogram: %v", h)
	}
	hist := h.GetMetric()[0].GetHistogram()
	if hist.GetSampleCount() != 6 || hist.GetSampleSum() != 2.5 {
		t.Errorf("histogram count %d sum %v, want 6 and 2.5", hist.GetSampleCount(), hist.GetSampleSum())
	}
	// Cumulative: 1 by 100µs, 1 by 1ms, 3 from 10ms to one minute, 6 in all.
	want := []uint64{1, 1, 3, 3, 3, 3, 3, 3, 6}
	if len(hist.GetBucket()) != len(want) {
		t.Fatalf("%d buckets, want %d", len(hist.GetBucket()), len(want))
	}
	for i, b := range hist.GetBucket() {
		le := math.Inf(1)
		if i < len(lockmgr.WaitBuckets) {
			le = lockmgr.WaitBuckets[i].Seconds()
		}
		if b.GetCumulativeCount() != want[i] || b.GetUpperBound() != le {
			t.Errorf("bucket %d: le %v count %d, want le %v count %d", i, b.GetUpperBound(), b.GetCumulativeCount(), le, want[i])
		}
	}
}

// Without /proc/self/fd the family is left out rather than reported as -1.
func TestRenderMetricsWithoutFDCount(t *testing.T) {
	fams := promtext.Parse(t, renderMetrics(metricsInput{openFDs: -1}))
	if _, ok := fams["process_open_fds"]; ok {
		t.Error("process_open_fds reported without a count")
	}
	if _, ok := fams["process_start_time_seconds"]; ok {
		t.Error("start time reported without one")
	}
	if got := promtext.Value(t, fams, "scanlockfs_lock_errno_total", "errno", "EDEADLK"); got != 0 {
		t.Errorf("EDEADLK %v", got)
	}
}

// errnoOf counts what the program got, by errno.
func TestErrnoOfCounts(t *testing.T) {
	fsys, _ := testFS(t)
	for _, err := range []error{lockmgr.ErrTimeout, lockmgr.ErrTimeout, lockmgr.ErrWouldBlock, lockmgr.ErrDeadlock, syscall.Errno(300)} {
		fsys.errnoOf(fsys.log, err)
	}
	got := fsys.errnos.snapshot()
	if got[syscall.EBUSY] != 2 || got[syscall.EAGAIN] != 1 || got[syscall.EDEADLK] != 1 || len(got) != 3 {
		t.Errorf("counts %v", got)
	}
}

func TestCountOpenFDs(t *testing.T) {
	before := countOpenFDs()
	f, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	noErr(t, err)
	defer syscall.Close(f)
	if after := countOpenFDs(); before < 3 || after != before+1 {
		t.Errorf("descriptors %d, then %d after one open", before, after)
	}
}
