package checker

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Violation kinds.
const (
	// Overlap: an exclusive interval overlaps another interval on its scan.
	Overlap = "overlap"
	// Unreleased: a grant with no end: its holder never released it (or
	// died holding it).
	Unreleased = "unreleased"
	// LostUpdate: a writer did not read what the previous writer wrote, or
	// did not write what it read plus one.
	LostUpdate = "lost-update"
	// StaleRead: a holder read a counter value other than the one the last
	// writer before it left.
	StaleRead = "stale-read"
	// TornRead: a holder found the counter file half-written.
	TornRead = "torn-read"
	// Count: the counter file's final value is not the initial value plus
	// the number of increments.
	Count = "count"
	// Malformed: a log line or event sequence that makes no sense.
	Malformed = "malformed"
)

// MaxDetails bounds the violations a Report lists one by one; all are
// counted.
const MaxDetails = 50

// Violation is one broken rule.
type Violation struct {
	Kind   string
	Scan   string
	Detail string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s on %q: %s", v.Kind, v.Scan, v.Detail)
}

// Counter is what the checker knows of a scan's counter file: the value
// before the run and the value found after it (FinalErr if it could not
// be read, or was torn).
type Counter struct {
	Initial  int
	Final    int
	FinalErr error
}

// Interval is one grant: from the return of the lock call to just before
// the release.
type Interval struct {
	Proc        string
	Seq         uint64
	Scan        string
	Mode        string
	Want        int64 // 0 if not recorded
	Begin, End  int64
	Read, Wrote int
}

func (iv *Interval) String() string {
	return fmt.Sprintf("%s#%d %s [%d, %d]", iv.Proc, iv.Seq, iv.Mode, iv.Begin, iv.End)
}

// Report is the outcome of Check.
type Report struct {
	Processes  int
	Ops        int // completed grants
	Shared     int
	Exclusive  int
	Increments int
	// Failures counts failed requests by error.
	Failures map[string]int
	// Violations lists the first MaxDetails violations; ByKind counts all.
	Violations []Violation
	ByKind     map[string]int
	// Waits are the times from want to begin, sorted.
	Waits []time.Duration
	// Span is the time from the first to the last event.
	Span time.Duration
	// Longest is the grant that waited longest.
	Longest *Interval
}

// ViolationCount is the number of violations found.
func (r *Report) ViolationCount() int {
	n := 0
	for _, c := range r.ByKind {
		n += c
	}
	return n
}

// FailureCount is the number of failed requests.
func (r *Report) FailureCount() int {
	n := 0
	for _, c := range r.Failures {
		n += c
	}
	return n
}

func (r *Report) add(kind, scan, format string, args ...any) {
	r.ByKind[kind]++
	if len(r.Violations) < MaxDetails {
		r.Violations = append(r.Violations, Violation{Kind: kind, Scan: scan, Detail: fmt.Sprintf(format, args...)})
	}
}

// Check reads the events of every process and reports every violation of
// the lock rules: on each scan no exclusive interval overlaps any other
// interval, every grant is released, and, for the scans in counters, the
// increments form one chain from the initial value to the final one and
// every holder read the value the last writer before it left.
func Check(events []Event, counters map[string]Counter) *Report {
	r := &Report{Failures: map[string]int{}, ByKind: map[string]int{}}
	byScan := map[string][]*Interval{}
	for k, o := range r.collect(events) {
		iv := r.interval(k, o)
		if iv == nil {
			continue
		}
		r.Ops++
		if iv.Mode == Exclusive {
			r.Exclusive++
		} else {
			r.Shared++
		}
		byScan[iv.Scan] = append(byScan[iv.Scan], iv)
	}
	sort.Slice(r.Waits, func(i, j int) bool { return r.Waits[i] < r.Waits[j] })

	scans := make([]string, 0, len(byScan))
	for s := range byScan {
		scans = append(scans, s)
	}
	for s := range counters {
		if _, ok := byScan[s]; !ok {
			scans = append(scans, s)
		}
	}
	sort.Strings(scans)
	for _, s := range scans {
		ivs := byScan[s]
		sort.Slice(ivs, func(i, j int) bool {
			if ivs[i].Begin != ivs[j].Begin {
				return ivs[i].Begin < ivs[j].Begin
			}
			return ivs[i].Proc+fmt.Sprint(ivs[i].Seq) < ivs[j].Proc+fmt.Sprint(ivs[j].Seq)
		})
		checkOverlaps(r, s, ivs)
		if c, ok := counters[s]; ok {
			checkCounter(r, s, ivs, c)
		}
	}
	return r
}

// opKey names one lock request: its process and sequence number.
type opKey struct {
	proc string
	seq  uint64
}

// opEvents are the events of one lock request.
type opEvents struct {
	want, begin, end *Event
}

// collect counts processes, failures and the time span, and groups the
// other events by request.
func (r *Report) collect(events []Event) map[opKey]*opEvents {
	ops := map[opKey]*opEvents{}
	procs := map[string]bool{}
	var first, last int64
	for i := range events {
		ev := &events[i]
		procs[ev.Proc] = true
		if first == 0 || ev.T < first {
			first = ev.T
		}
		last = max(last, ev.T)
		if ev.Kind == Fail {
			r.Failures[ev.Err]++
			continue
		}
		k := opKey{ev.Proc, ev.Seq}
		o := ops[k]
		if o == nil {
			o = &opEvents{}
			ops[k] = o
		}
		slot := map[string]**Event{Want: &o.want, Begin: &o.begin, End: &o.end}[ev.Kind]
		if *slot != nil {
			r.add(Malformed, ev.Scan, "%s#%d: two %s events", ev.Proc, ev.Seq, ev.Kind)
			continue
		}
		*slot = ev
	}
	r.Processes = len(procs)
	if last > first {
		r.Span = time.Duration(last - first)
	}
	return ops
}

// interval checks the events of one request and returns its grant, or
// nil (and what was wrong, if anything) if it was none.
func (r *Report) interval(k opKey, o *opEvents) *Interval {
	switch {
	case o.begin == nil && o.end != nil:
		r.add(Malformed, o.end.Scan, "%s#%d: end without begin", k.proc, k.seq)
		return nil
	case o.begin == nil:
		// A want whose request neither succeeded nor failed: the
		// process died waiting. Not a grant, nothing to release.
		return nil
	case o.end == nil:
		r.add(Unreleased, o.begin.Scan, "%s#%d %s granted at %d, never released", k.proc, k.seq, o.begin.Mode, o.begin.T)
		return nil
	}
	b, e := o.begin, o.end
	if e.Scan != b.Scan || e.Mode != b.Mode {
		r.add(Malformed, b.Scan, "%s#%d: begins as %s %q, ends as %s %q", k.proc, k.seq, b.Mode, b.Scan, e.Mode, e.Scan)
		return nil
	}
	if e.T < b.T {
		r.add(Malformed, b.Scan, "%s#%d: ends at %d before it begins at %d", k.proc, k.seq, e.T, b.T)
		return nil
	}
	iv := &Interval{Proc: k.proc, Seq: k.seq, Scan: b.Scan, Mode: b.Mode, Begin: b.T, End: e.T, Read: e.Read, Wrote: e.Wrote}
	if o.want != nil {
		if o.want.T > b.T {
			r.add(Malformed, b.Scan, "%s#%d: granted at %d before it was wanted at %d", k.proc, k.seq, b.T, o.want.T)
			return nil
		}
		iv.Want = o.want.T
		r.Waits = append(r.Waits, time.Duration(b.T-o.want.T))
		if r.Longest == nil || iv.Begin-iv.Want > r.Longest.Begin-r.Longest.Want {
			r.Longest = iv
		}
	}
	if iv.Wrote >= 0 && iv.Mode != Exclusive {
		r.add(Malformed, b.Scan, "%s: wrote the counter under a shared lock", iv)
	}
	return iv
}

// checkOverlaps sweeps the intervals of one scan in order of begin,
// keeping those still running: an interval overlaps an earlier one
// exactly when that one has not ended when it begins.
func checkOverlaps(r *Report, scan string, ivs []*Interval) {
	var active []*Interval
	for _, iv := range ivs {
		kept := active[:0]
		for _, a := range active {
			if a.End > iv.Begin {
				kept = append(kept, a)
			}
		}
		active = kept
		for _, a := range active {
			if a.Mode == Exclusive || iv.Mode == Exclusive {
				r.add(Overlap, scan, "%s overlaps %s by %v", a, iv, time.Duration(min(a.End, iv.End)-iv.Begin))
			}
		}
		active = append(active, iv)
	}
}

// checkCounter follows the increments of one scan in order (they are
// exclusive, so ordered once checkOverlaps found nothing) and checks what
// every holder read against the last increment before it.
func checkCounter(r *Report, scan string, ivs []*Interval, c Counter) {
	var writes []*Interval
	for _, iv := range ivs {
		if iv.Wrote >= 0 {
			writes = append(writes, iv)
		}
	}
	r.Increments += len(writes)
	v := c.Initial
	for _, w := range writes {
		if w.Read >= 0 && w.Read != v {
			r.add(LostUpdate, scan, "%s read %d, but the previous increment left %d", w, w.Read, v)
		}
		if w.Read >= 0 && w.Wrote != w.Read+1 {
			r.add(LostUpdate, scan, "%s read %d and wrote %d", w, w.Read, w.Wrote)
		}
		v = w.Wrote
	}
	for _, iv := range ivs {
		switch {
		case iv.Read == Torn:
			r.add(TornRead, scan, "%s found the counter file half-written", iv)
			continue
		case iv.Read < 0 || iv.Wrote >= 0:
			continue // writers were checked above
		}
		// The last increment that ended before iv began.
		i := sort.Search(len(writes), func(i int) bool { return writes[i].End > iv.Begin })
		want := c.Initial
		if i > 0 {
			want = writes[i-1].Wrote
		}
		if iv.Read != want {
			r.add(StaleRead, scan, "%s read %d, the last increment before it left %d", iv, iv.Read, want)
		}
	}
	switch {
	case c.FinalErr != nil:
		r.add(Count, scan, "final counter: %v", c.FinalErr)
	case c.Final != c.Initial+len(writes):
		r.add(Count, scan, "final counter %d, want %d (initial %d + %d increments)", c.Final, c.Initial+len(writes), c.Initial, len(writes))
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of the waits by
// the nearest-rank method, or 0 without waits.
func (r *Report) Percentile(p float64) time.Duration {
	if len(r.Waits) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(len(r.Waits))*p/100)) - 1
	i = min(max(i, 0), len(r.Waits)-1)
	return r.Waits[i]
}

// Summary is the report as a few lines of text.
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "operations: %d (shared %d, exclusive %d, counter increments %d) by %d processes over %v\n",
		r.Ops, r.Shared, r.Exclusive, r.Increments, r.Processes, r.Span.Round(time.Millisecond))
	fmt.Fprintf(&b, "violations: %d", r.ViolationCount())
	if r.ViolationCount() > 0 {
		kinds := make([]string, 0, len(r.ByKind))
		for k, n := range r.ByKind {
			kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
		}
		sort.Strings(kinds)
		fmt.Fprintf(&b, " (%s)", strings.Join(kinds, " "))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "failed requests: %d", r.FailureCount())
	if r.FailureCount() > 0 {
		var errs []string
		for e, n := range r.Failures {
			errs = append(errs, fmt.Sprintf("%s=%d", e, n))
		}
		sort.Strings(errs)
		fmt.Fprintf(&b, " (%s)", strings.Join(errs, " "))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "wait: p50 %v  p90 %v  p99 %v  p99.9 %v  max %v  (%d waits)\n",
		fmtDur(r.Percentile(50)), fmtDur(r.Percentile(90)), fmtDur(r.Percentile(99)), fmtDur(r.Percentile(99.9)),
		fmtDur(r.Percentile(100)), len(r.Waits))
	if r.Longest != nil {
		fmt.Fprintf(&b, "longest wait: %s on %q\n", r.Longest, r.Longest.Scan)
	}
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	return b.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
