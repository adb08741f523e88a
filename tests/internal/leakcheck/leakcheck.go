// Package leakcheck tells whether a scanlockfs daemon is back to where it
// started once its clients are gone: no flock held or awaited on SOURCE
// (a lease or a waiting writer of the daemon would hold one), the same
// open descriptors apart from the lock files lockmgr keeps open by design
// and the directories fusefs keeps for lookups (scanlockfs_dir_fds),
// and, where the mount serves metrics, no holder or waiter and the
// goroutine count back to the baseline.
//
// Take a Snapshot after the mount is ready and has served one request
// (the Go runtime opens its poller on first use), another when the test
// is done, and ask Leaks; release is asynchronous (close(2) returns
// before the kernel's RELEASE), so callers poll until Leaks is empty or a
// deadline passes.
package leakcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"scanlockfs/internal/procfs"
)

// Snapshot is what a process holds at one instant.
type Snapshot struct {
	PID int
	// FDs counts the process's descriptors by what they name, without the
	// lock files in the lock directory.
	FDs map[string]int
	// Dirs are the names in FDs that are directories: fusefs keeps a
	// descriptor of a directory for the lookups in it until the kernel
	// forgets it, as many as the metric scanlockfs_dir_fds says.
	Dirs map[string]bool
	// LockFDs counts descriptors on files of the lock directory. lockmgr
	// keeps a scan's lock file open while the scan is in use and for up to
	// 64 idle scans after (lockmgr's "Descriptors"), never two for one file.
	LockFDs map[string]int
	// Pidfds are the processes the process's pidfds refer to (-1 for a
	// process that is gone). fusefs keeps one for each client process
	// that made a request, up to MaxPidfds, also after it exited.
	Pidfds []int
	// Flocks are the /proc/locks lines of the process (held or awaited).
	Flocks []string
	// Metrics are the values of the mount's metrics file, summed over
	// labels; nil when there is no metrics file.
	Metrics map[string]float64
}

// MaxIdleLockFiles is lockmgr's bound on cached idle lock files.
const MaxIdleLockFiles = 64

// MaxPidfds is fusefs's bound on the pidfds it keeps for callers.
const MaxPidfds = 256

// Take records what process pid holds now. lockDir is SOURCE/.locks;
// metrics is the path of the mount's Prometheus metrics file ("" or a
// missing file: no metrics).
func Take(pid int, lockDir, metrics string) (*Snapshot, error) {
	s := &Snapshot{PID: pid, FDs: map[string]int{}, Dirs: map[string]bool{}, LockFDs: map[string]int{}}
	fds, err := procfs.ReadFDs(pid)
	if err != nil {
		return nil, err
	}
	prefix := filepath.Clean(lockDir) + "/"
	for _, fd := range fds {
		switch target := fd.Link(); {
		case strings.HasPrefix(target, prefix):
			s.LockFDs[target]++
		case target == "anon_inode:[pidfd]":
			// The process the pidfd refers to; -1 once it is gone.
			p, err := procfs.ReadPidfdPid(pid, fd.Num)
			if err != nil {
				p = -1
			}
			s.Pidfds = append(s.Pidfds, p)
		default:
			s.FDs[target]++
			// Through the descriptor: a directory removed meanwhile is
			// named "... (deleted)".
			if st, err := os.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd.Num)); err == nil && st.IsDir() {
				s.Dirs[target] = true
			}
		}
	}
	if s.Flocks, err = flocksOf(pid); err != nil {
		return nil, err
	}
	if metrics != "" {
		b, err := os.ReadFile(metrics)
		if err == nil {
			s.Metrics = parseMetrics(string(b))
		} else if !os.IsNotExist(err) {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return s, nil
}

// flocksOf returns the locks in /proc/locks that belong to pid, one
// line each.
func flocksOf(pid int) ([]string, error) {
	locks, err := procfs.ReadLocks()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range locks {
		if l.PID == pid {
			out = append(out, fmt.Sprintf("%+v", l))
		}
	}
	return out, nil
}

// parseMetrics sums the samples of a Prometheus text exposition by
// metric name (labels dropped). Only what Leaks needs: it is not a test
// of the format.
func parseMetrics(text string) map[string]float64 {
	m := map[string]float64{}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		name, rest := l, ""
		if i := strings.IndexAny(l, "{ "); i >= 0 {
			name, rest = l[:i], l[i:]
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndex(rest, "}")
			if j < 0 {
				continue
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		m[name] += v
	}
	return m
}

// MaxSplicePairs bounds the pipe pairs go-fuse's splice package keeps
// for reuse: one per request that spliced at the same time, and no more
// requests are served at once than there are request readers.
func MaxSplicePairs() int { return int(GoroutineSlack()) }

// GoroutineSlack is how far the goroutine count may be above the
// baseline without a leak: go-fuse keeps up to GOMAXPROCS (at least 2, at
// most 16) idle request readers, started under load.
func GoroutineSlack() float64 {
	return float64(min(max(runtime.NumCPU(), 2), 16)) + 1
}

// Leaks compares cur with base and says what the process still holds:
// flocks; descriptors beyond the baseline (pidfds only beyond fusefs's
// cache: more than MaxPidfds, or two for one process); where there are metrics,
// non-zero holder, waiter and active-scan gauges and a goroutine count
// above the baseline by more than GoroutineSlack.
// go-fuse's splice package keeps pipe pairs for reuse and opens
// /dev/null once, on first use; those may appear after the baseline
// (within MaxSplicePairs), anything else may not.
func Leaks(base, cur *Snapshot) []string {
	var out []string
	for _, l := range cur.Flocks {
		out = append(out, "holds or waits for a flock (a lease or a waiter left): "+l)
	}
	names := map[string]bool{}
	for k := range base.FDs {
		names[k] = true
	}
	for k := range cur.FDs {
		names[k] = true
	}
	var keys []string
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	newPairs, newDirs := 0, 0
	for _, k := range keys {
		n, b := cur.FDs[k], base.FDs[k]
		switch {
		case n <= b:
		case cur.Dirs[k]:
			// Kept for lookups, checked below against the count the
			// daemon gives. Not one per name: directories removed on
			// SOURCE whose nodes the kernel has not forgotten yet keep
			// theirs, and a name replaced again and again (a swapping
			// attacker's "sub2") can stand for several of them.
			newDirs += n - b
		case strings.HasPrefix(k, "pipe:") && n == 2 && b == 0:
			newPairs++ // both ends here: a splice pair, counted below
		case k == "/dev/null" && n == b+1:
			// go-fuse's splice package opens /dev/null once, on first use.
		default:
			out = append(out, fmt.Sprintf("%d descriptor(s) on %s, %d at the baseline", n, k, b))
		}
	}
	if kept := cur.Metrics["scanlockfs_dir_fds"] - base.Metrics["scanlockfs_dir_fds"]; float64(newDirs) > kept {
		out = append(out, fmt.Sprintf("%d new descriptors on directories, the daemon keeps %v for lookups (scanlockfs_dir_fds)", newDirs, kept))
	}
	if newPairs > MaxSplicePairs() {
		out = append(out, fmt.Sprintf("%d new pipe pairs, more than go-fuse's splice pool keeps (%d)", newPairs, MaxSplicePairs()))
	}
	total := 0
	for k, n := range cur.LockFDs {
		total += n
		if n > 1 {
			out = append(out, fmt.Sprintf("%d descriptors on lock file %s (lockmgr keeps one)", n, k))
		}
	}
	if total > MaxIdleLockFiles+len(base.LockFDs) {
		out = append(out, fmt.Sprintf("%d lock files open, more than lockmgr's %d cached", total, MaxIdleLockFiles))
	}
	if len(cur.Pidfds) > MaxPidfds {
		out = append(out, fmt.Sprintf("%d pidfds open, more than fusefs keeps (%d)", len(cur.Pidfds), MaxPidfds))
	}
	seen := map[int]bool{}
	for _, p := range cur.Pidfds {
		if p > 0 && seen[p] {
			out = append(out, fmt.Sprintf("two pidfds for process %d (fusefs keeps one)", p))
		}
		seen[p] = true
	}
	if cur.Metrics != nil {
		for name, v := range cur.Metrics {
			if isGauge(name) && (strings.Contains(name, "holders") || strings.Contains(name, "waiters") || strings.HasSuffix(name, "_active")) && v != 0 {
				out = append(out, fmt.Sprintf("metrics: %s = %v", name, v))
			}
		}
		if g, ok := cur.Metrics["go_goroutines"]; ok && base.Metrics != nil {
			if b, ok := base.Metrics["go_goroutines"]; ok && g > b+GoroutineSlack() {
				out = append(out, fmt.Sprintf("metrics: go_goroutines = %v, %v at the baseline", g, b))
			}
		}
	}
	sort.Strings(out)
	return out
}

func isGauge(name string) bool {
	for _, suf := range []string{"_total", "_bucket", "_sum", "_count", "_created"} {
		if strings.HasSuffix(name, suf) {
			return false
		}
	}
	return true
}
