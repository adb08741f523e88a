package fusefs

import (
	"bytes"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
	"scanlockfs/lockmgr"
)

// MOUNTPOINT/.locks/metrics: the mount's counters in the Prometheus text
// exposition format (version 0.0.4), for a node_exporter textfile
// collector or a script. Written by hand: the format is simple and the
// daemon need not link a metrics library.
//
//	scanlockfs_lock_grants_total{mode}       counter  locks granted to programs of the mount
//	scanlockfs_lock_refusals_total{reason}   counter  requests refused: timeout, would_block, deadlock, cancelled, other
//	scanlockfs_lock_errno_total{errno}       counter  errno values lock refusals returned to programs
//	scanlockfs_lock_wait_seconds             histogram  time granted requests waited
//	scanlockfs_lock_holders                  gauge    leases held now
//	scanlockfs_lock_waiters                  gauge    requests waiting now
//	scanlockfs_lock_scans_active             gauge    scans with a holder or waiter of the mount
//	scanlockfs_lock_files_replaced_total     counter  flocks retaken because the lock file was replaced
//	scanlockfs_lock_files_lost_total         counter  releases that found the lock file replaced (exclusion may have been broken)
//	scanlockfs_info_writes_total             counter  SOURCE .info files written
//	scanlockfs_opens_total                   counter  files opened or created through the mount
//	scanlockfs_daemon_reads_total            counter  reads served by the daemon (0 with passthrough)
//	scanlockfs_daemon_writes_total           counter  writes served by the daemon (0 with passthrough)
//	scanlockfs_fuse_requests_total{op}       counter  FUSE requests by opcode (LOOKUP, GETATTR, OPEN, FLUSH...)
//	scanlockfs_dir_fds                       gauge    directory descriptors kept for lookups
//	scanlockfs_cache_invalidations_total     counter  kernel caches of files changed on SOURCE dropped at OPEN
//	scanlockfs_notify_events_total           counter  inotify events read (changes on SOURCE, the mount's own included)
//	scanlockfs_notify_invalidations_total    counter  names or attributes the kernel was told changed on SOURCE
//	scanlockfs_notify_overflows_total        counter  inotify queue overflows (everything invalidated)
//	scanlockfs_notify_watch_failures_total   counter  directories that could not be watched (entry timeout applies)
//	scanlockfs_notify_watches                gauge    directories of SOURCE watched now
//	process_open_fds                         gauge    descriptors the daemon has open
//	go_goroutines                            gauge    goroutines of the daemon
//	process_start_time_seconds               gauge    when the daemon started (the mount, here)

// metricsInput is what renderMetrics shows.
type metricsInput struct {
	lock   lockmgr.Stats
	fs     Stats
	errnos map[syscall.Errno]uint64
	// requests counts FUSE requests by opcode name.
	requests map[string]uint64
	dirFDs   int64
	// invalidations counts kernel cache invalidations at OPEN.
	invalidations uint64
	notify        notifyStats
	// openFDs is -1 when /proc/self/fd cannot be read.
	openFDs    int
	goroutines int
	started    time.Time
	cluster    lockmgr.ClusterStats // --etcd (status_metrics_cluster.go)
}

// alwaysErrnos are shown even at zero, so that alerts and tests can rely
// on the series existing.
var alwaysErrnos = []syscall.Errno{syscall.EBUSY, syscall.EAGAIN, syscall.EINTR, syscall.EDEADLK}

func renderMetrics(in metricsInput) []byte {
	var w promWriter
	l := in.lock

	w.family("scanlockfs_lock_grants_total", "counter", "Scan locks granted to programs using the mount, by mode.")
	w.sample("scanlockfs_lock_grants_total", `mode="shared"`, u(l.GrantsShared))
	w.sample("scanlockfs_lock_grants_total", `mode="exclusive"`, u(l.GrantsExclusive))

	w.family("scanlockfs_lock_refusals_total", "counter", "Scan lock requests the lock manager did not grant, by reason (each retry of an apparent deadlock counts).")
	for _, r := range []struct {
		reason string
		n      uint64
	}{{"timeout", l.Timeouts}, {"would_block", l.WouldBlock}, {"deadlock", l.Deadlocks},
		{"cancelled", l.Cancelled}, {"other", l.OtherErrors}} {
		w.sample("scanlockfs_lock_refusals_total", `reason="`+r.reason+`"`, u(r.n))
	}

	w.family("scanlockfs_lock_errno_total", "counter", "Errno values returned to programs whose scan lock was refused.")
	for _, e := range sortedErrnos(in.errnos) {
		w.sample("scanlockfs_lock_errno_total", `errno="`+errnoLabel(e)+`"`, u(in.errnos[e]))
	}

	w.family("scanlockfs_lock_wait_seconds", "histogram", "Time granted scan lock requests waited.")
	var cum uint64
	for i, b := range lockmgr.WaitBuckets {
		cum += l.WaitCounts[i]
		w.sample("scanlockfs_lock_wait_seconds_bucket", `le="`+fmtFloat(b.Seconds())+`"`, u(cum))
	}
	cum += l.WaitCounts[len(lockmgr.WaitBuckets)]
	w.sample("scanlockfs_lock_wait_seconds_bucket", `le="+Inf"`, u(cum))
	w.sample("scanlockfs_lock_wait_seconds_sum", "", fmtFloat(l.WaitSum.Seconds()))
	w.sample("scanlockfs_lock_wait_seconds_count", "", u(cum))

	w.gauge("scanlockfs_lock_holders", "Scan lock leases held through the mount now.", strconv.Itoa(l.Holders))
	w.gauge("scanlockfs_lock_waiters", "Scan lock requests of the mount waiting now.", strconv.Itoa(l.Waiters))
	w.gauge("scanlockfs_lock_scans_active", "Scans with a holder or a waiter of the mount now.", strconv.Itoa(l.Scans))
	w.counter("scanlockfs_lock_files_replaced_total", "Flocks taken again because the lock file was replaced around the flock call.", u(l.Replaced))
	w.counter("scanlockfs_lock_files_lost_total", "Releases that found the lock file removed or replaced by another process while held.", u(l.LostLockFiles))
	w.counter("scanlockfs_info_writes_total", "Lock .info files written on SOURCE.", u(l.InfoWrites))
	renderClusterMetrics(&w, in.cluster)

	w.counter("scanlockfs_opens_total", "Files opened or created through the mount.", u(in.fs.Opens))
	w.counter("scanlockfs_daemon_reads_total", "Read requests served by the daemon (zero with kernel passthrough).", u(in.fs.Reads))
	w.counter("scanlockfs_daemon_writes_total", "Write requests served by the daemon (zero with kernel passthrough).", u(in.fs.Writes))

	w.family("scanlockfs_fuse_requests_total", "counter", "FUSE requests the kernel sent, by opcode.")
	for _, op := range slices.Sorted(maps.Keys(in.requests)) {
		w.sample("scanlockfs_fuse_requests_total", `op="`+op+`"`, u(in.requests[op]))
	}
	w.gauge("scanlockfs_dir_fds", "Descriptors of directories the daemon keeps for lookups in them.", strconv.FormatInt(in.dirFDs, 10))
	w.counter("scanlockfs_cache_invalidations_total", "Opens that found the file changed on SOURCE since the kernel cached it, and dropped the kernel's attributes and data of it.", u(in.invalidations))
	w.counter("scanlockfs_notify_events_total", "inotify events read from SOURCE's watched directories, the mount's own changes included.", u(in.notify.events))
	w.counter("scanlockfs_notify_invalidations_total", "Names and attributes the kernel was told had changed on SOURCE.", u(in.notify.sent))
	w.counter("scanlockfs_notify_overflows_total", "inotify queue overflows, after which every cached name was invalidated.", u(in.notify.overflows))
	w.counter("scanlockfs_notify_watch_failures_total", "Directories that could not be watched; their names lag by the entry timeout.", u(in.notify.watchFailures))
	w.gauge("scanlockfs_notify_watches", "Directories of SOURCE watched for changes now.", strconv.FormatInt(in.notify.watches, 10))

	if in.openFDs >= 0 {
		w.gauge("process_open_fds", "Number of open file descriptors of the daemon.", strconv.Itoa(in.openFDs))
	}
	w.gauge("go_goroutines", "Number of goroutines of the daemon.", strconv.Itoa(in.goroutines))
	if !in.started.IsZero() {
		w.gauge("process_start_time_seconds", "Start time of the mount since the epoch in seconds.", fmtFloat(unixSeconds(in.started)))
	}
	return w.b.Bytes()
}

// gatherMetrics collects metricsInput for this mount now.
func (fsys *fileSystem) gatherMetrics() metricsInput {
	in := metricsInput{
		lock:    fsys.mgr.Stats(),
		cluster: fsys.mgr.ClusterStats(),
		fs: Stats{Opens: fsys.stats.opens.Load(), Reads: fsys.stats.reads.Load(),
			Writes: fsys.stats.writes.Load()},
		errnos:        fsys.errnos.snapshot(),
		requests:      fsys.requests.snapshot(),
		dirFDs:        fsys.dirFDs.Load(),
		invalidations: fsys.invalidations.Load(),
		notify:        fsys.notify.stats(),
		openFDs:       countOpenFDs(),
		goroutines:    runtime.NumGoroutine(),
	}
	if fsys.status != nil {
		in.started = fsys.status.started
	}
	return in
}

// countOpenFDs counts the daemon's descriptors, without the one used to
// list them.
func countOpenFDs() int {
	fds, err := procfs.SelfFDs()
	if err != nil {
		return -1
	}
	return len(fds)
}

func sortedErrnos(m map[syscall.Errno]uint64) []syscall.Errno {
	out := append([]syscall.Errno(nil), alwaysErrnos...)
	var rest []syscall.Errno
	for e := range m {
		known := false
		for _, a := range alwaysErrnos {
			known = known || a == e
		}
		if !known {
			rest = append(rest, e)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// errnoLabel is the symbolic name of e ("EBUSY"), or its number.
func errnoLabel(e syscall.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return "errno_" + strconv.Itoa(int(e))
}

// promWriter writes the text exposition format. Names and label values
// come from this file only, so nothing needs escaping.
type promWriter struct{ b bytes.Buffer }

func (w *promWriter) family(name, typ, help string) {
	w.b.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}

func (w *promWriter) sample(name, labels, value string) {
	w.b.WriteString(name)
	if labels != "" {
		w.b.WriteString("{" + labels + "}")
	}
	w.b.WriteString(" " + value + "\n")
}

func (w *promWriter) gauge(name, help, value string) {
	w.family(name, "gauge", help)
	w.sample(name, "", value)
}

func (w *promWriter) counter(name, help, value string) {
	w.family(name, "counter", help)
	w.sample(name, "", value)
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
