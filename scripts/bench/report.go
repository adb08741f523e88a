package main

import (
	"cmp"
	"encoding/csv"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Variants a row can hold samples for. Filesystem rows compare native,
// loopback and scanlockfs; lock manager rows compare Go and Python.
const (
	vNative   = "native"
	vLoopback = "loopback"
	// vLoopbackDefaults is the loopback with go-fuse's default options
	// (loopback -go-fuse-defaults): what a new user would compare with.
	vLoopbackDefaults = "loopback-defaults"
	vScanlockfs       = "scanlockfs"
	vGo               = "go"
	vPython           = "python"
)

// fsVariants are the targets of the filesystem workloads.
var fsVariants = []string{vNative, vLoopback, vLoopbackDefaults, vScanlockfs}

const (
	sectionFS   = "fs"
	sectionLock = "lock"
)

type goalKind int

const (
	goalNone        goalKind = iota
	goalVsLoopback           // scanlockfs / loopback <= value
	goalVsNativeMin          // scanlockfs / native >= value (throughput)
	goalAbsMax               // the subject's median <= value (in the row's unit)
	goalVsPython             // go / python <= value
)

// goal is a target of the issue, shown next to the measured figure. It
// is informational: a miss never changes the exit code.
type goal struct {
	kind  goalKind
	value float64
}

func (g goal) String() string {
	switch g.kind {
	case goalVsLoopback:
		return "≤ " + fmtNum(g.value) + "× loopback"
	case goalVsNativeMin:
		return "≥ " + strconv.Itoa(int(math.Round(g.value*100))) + "% of native"
	case goalAbsMax:
		return "≤ " + fmtNum(g.value)
	case goalVsPython:
		return "≥ " + fmtNum(1/g.value) + "× faster than Python"
	}
	return ""
}

// row is one line of the report: one measure, samples per variant.
type row struct {
	section      string
	id, name     string
	unit         string
	higherBetter bool
	goal         goal
	samples      map[string][]float64
	// per names one operation of the row for its FUSE requests ("" for a
	// row without them); reqs sums them by variant (requests.go).
	per  string
	reqs map[string]*reqTally
}

// reqTally is the FUSE requests of a row's measured repetitions on one
// target, and the operations they served.
type reqTally struct {
	counts reqCounts
	ops    int
}

// perOp is the mean number of requests per operation, by opcode.
func (t *reqTally) perOp() map[string]float64 {
	m := map[string]float64{}
	for op, n := range t.counts {
		if n > 0 {
			m[op] = float64(n) / float64(t.ops)
		}
	}
	return m
}

// total is the mean number of requests of any opcode per operation.
func (t *reqTally) total() float64 {
	var sum float64
	for _, v := range t.perOp() {
		sum += v
	}
	return sum
}

// String lists the opcodes, most frequent first: "OPEN 1, RELEASE 1,
// LOOKUP 0.02".
func (t *reqTally) String() string {
	m := t.perOp()
	ops := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(ops))
	for i, op := range ops {
		parts[i] = op + " " + fmtReqs(m[op])
	}
	return strings.Join(parts, ", ")
}

// csv lists the opcodes by name, "LOOKUP=0.02 OPEN=1 RELEASE=1", with
// six significant digits.
func (t *reqTally) csv() string {
	m := t.perOp()
	var parts []string
	for _, op := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, op+"="+strconv.FormatFloat(m[op], 'g', 6, 64))
	}
	return strings.Join(parts, " ")
}

// countRequests makes r report the FUSE requests per operation, one
// operation being what per names ("open", "file", "listing").
func (r *row) countRequests(per string) *row {
	r.per = per
	return r
}

func (r *row) subject() string {
	if r.section == sectionLock {
		return vGo
	}
	return vScanlockfs
}

func (r *row) median(variant string) float64 {
	xs := r.samples[variant]
	if len(xs) == 0 {
		return math.NaN()
	}
	return summarize(xs).Median
}

// ratio is the subject's median over the baseline's, in the row's unit.
func (r *row) ratio(baseline string) float64 {
	return r.median(r.subject()) / r.median(baseline)
}

// status says whether the goal is met: "pass", "miss", "n/a" (no data)
// or "" (no goal).
func (r *row) status() string {
	var v float64
	var ok bool
	switch r.goal.kind {
	case goalNone:
		return ""
	case goalVsLoopback:
		v = r.ratio(vLoopback)
		ok = v <= r.goal.value
	case goalVsNativeMin:
		v = r.ratio(vNative)
		ok = v >= r.goal.value
	case goalAbsMax:
		v = r.median(r.subject())
		ok = v <= r.goal.value
	case goalVsPython:
		v = r.ratio(vPython)
		ok = v <= r.goal.value
	}
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case ok:
		return "pass"
	}
	return "miss"
}

// report collects the rows in the order they were defined.
type report struct {
	rows    []*row
	byID    map[string]*row
	notes   []string
	machine []string
}

func newReport() *report { return &report{byID: map[string]*row{}} }

func (rp *report) define(section, id, name, unit string, higherBetter bool, g goal) *row {
	if r, ok := rp.byID[id]; ok {
		return r
	}
	r := &row{section: section, id: id, name: name, unit: unit, higherBetter: higherBetter, goal: g, samples: map[string][]float64{}}
	rp.rows = append(rp.rows, r)
	rp.byID[id] = r
	return r
}

func (rp *report) add(id, variant string, v float64) {
	r, ok := rp.byID[id]
	if !ok {
		panic("bench: sample for undefined row " + id) // a bug in this program, not input
	}
	r.samples[variant] = append(r.samples[variant], v)
}

// addRequests adds the requests counts of ops operations of row id on
// variant. Negative counts (a release counted with the part before) are
// dropped.
func (rp *report) addRequests(id, variant string, counts reqCounts, ops int) {
	r, ok := rp.byID[id]
	if !ok || r.per == "" {
		panic("bench: requests for row " + id + ", which counts none") // a bug in this program
	}
	if r.reqs == nil {
		r.reqs = map[string]*reqTally{}
	}
	t := r.reqs[variant]
	if t == nil {
		t = &reqTally{counts: reqCounts{}}
		r.reqs[variant] = t
	}
	for op, n := range counts {
		t.counts[op] += max(n, 0)
	}
	t.ops += ops
}

func (rp *report) notef(format string, args ...any) {
	rp.notes = append(rp.notes, fmt.Sprintf(format, args...))
}

func cell(xs []float64) string {
	if len(xs) == 0 {
		return "—"
	}
	s := summarize(xs)
	if s.N == 1 {
		return fmtNum(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtNum(s.Median), fmtNum(s.P25), fmtNum(s.P75))
}

func ratioCell(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmtNum(v) + "×"
}

func mark(status string) string {
	switch status {
	case "pass":
		return "pass"
	case "miss":
		return "**miss**"
	}
	return status
}

// writeMarkdown prints the machine, both tables and the notes.
func (rp *report) writeMarkdown(w io.Writer) {
	if len(rp.machine) > 0 {
		fmt.Fprintln(w, "Machine:")
		for _, m := range rp.machine {
			fmt.Fprintln(w, "- "+m)
		}
		fmt.Fprintln(w)
	}
	var fsRows, lockRows []*row
	for _, r := range rp.rows {
		if r.section == sectionLock {
			lockRows = append(lockRows, r)
		} else {
			fsRows = append(fsRows, r)
		}
	}
	writeTable(w, "Median (interquartile range) over the repetitions; ratios are scanlockfs ÷ baseline in the row's unit.",
		"| # | workload | unit | native | loopback | loopback-defaults | scanlockfs | scanlockfs/loopback | scanlockfs/loopback-defaults | scanlockfs/native | target | |",
		fsRows, func(r *row) []string {
			return []string{cell(r.samples[vNative]), cell(r.samples[vLoopback]), cell(r.samples[vLoopbackDefaults]), cell(r.samples[vScanlockfs]),
				ratioCell(r.ratio(vLoopback)), ratioCell(r.ratio(vLoopbackDefaults)), ratioCell(r.ratio(vNative))}
		})
	var reqRows []*row
	for _, r := range fsRows {
		if len(r.reqs) > 0 {
			reqRows = append(reqRows, r)
		}
	}
	writeRequests(w, reqRows)
	writeTable(w, "Lock manager alone (workload 7): Go lockmgr processes against Python processes on plantdb's protocol, same run.",
		"| # | measure | unit | Go lockmgr | Python peer | Go/Python | target | |",
		lockRows, func(r *row) []string {
			return []string{cell(r.samples[vGo]), cell(r.samples[vPython]), ratioCell(r.ratio(vPython))}
		})
	for _, n := range rp.notes {
		fmt.Fprintln(w, "- "+n)
	}
}

// writeRequests prints the FUSE requests per operation of rows (if any).
func writeRequests(w io.Writer, rows []*row) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "FUSE requests per operation, by opcode (mean over the measured repetitions; the bench's own reading of the counters is taken off), total first.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| # | workload | per | loopback | loopback-defaults | scanlockfs |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range rows {
		cells := []string{r.id, r.name, r.per}
		for _, v := range []string{vLoopback, vLoopbackDefaults, vScanlockfs} {
			cells = append(cells, reqCell(r.reqs[v]))
		}
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	fmt.Fprintln(w)
}

func reqCell(t *reqTally) string {
	if t == nil || t.ops == 0 {
		return "—"
	}
	if len(t.perOp()) == 0 {
		return "0"
	}
	return fmtReqs(t.total()) + ": " + t.String()
}

// fmtReqs prints a number of requests with three significant digits and
// no trailing zeros: 1, 0.6, 0.0333, 212.
func fmtReqs(v float64) string {
	if v >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// writeTable prints rows (if any) as a Markdown table under title: each
// row's id, name and unit, the cells of figures, then its goal and mark.
func writeTable(w io.Writer, title, header string, rows []*row, figures func(*row) []string) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, title)
	fmt.Fprintln(w)
	fmt.Fprintln(w, header)
	fmt.Fprintln(w, strings.Repeat("|---", strings.Count(header, "|")-1)+"|")
	for _, r := range rows {
		cells := append([]string{r.id, r.name, r.unit}, figures(r)...)
		cells = append(cells, fmt.Sprint(r.goal), mark(r.status()))
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	fmt.Fprintln(w)
}

// csvHeader is the CSV's first line: one line per row and variant; the
// ratios, target and status are on the subject's line (scanlockfs or go);
// the FUSE requests per operation on each FUSE target's line (what one
// operation is, the mean number of requests, and the mean by opcode as
// "LOOKUP=0.02 OPEN=1 RELEASE=1"). New columns go at the end, so that
// readers of older files keep working.
var csvHeader = []string{"section", "id", "workload", "unit", "better", "variant", "n",
	"median", "p25", "p75", "min", "max", "ratio_vs_loopback", "ratio_vs_native", "ratio_vs_python", "target", "status", "ratio_vs_loopback_defaults",
	"requests_per", "requests_total", "requests_by_op"}

func (rp *report) writeCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write(csvHeader)
	num := func(v float64) string {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return ""
		}
		return strconv.FormatFloat(v, 'g', 6, 64)
	}
	for _, r := range rp.rows {
		better := "lower"
		if r.higherBetter {
			better = "higher"
		}
		variants := fsVariants
		if r.section == sectionLock {
			variants = []string{vGo, vPython}
		}
		for _, v := range variants {
			xs := r.samples[v]
			if len(xs) == 0 {
				continue
			}
			s := summarize(xs)
			rec := []string{r.section, r.id, r.name, r.unit, better, v, strconv.Itoa(s.N),
				num(s.Median), num(s.P25), num(s.P75), num(s.Min), num(s.Max), "", "", "", "", "", "", "", "", ""}
			if v == r.subject() {
				if r.section == sectionLock {
					rec[14] = num(r.ratio(vPython))
				} else {
					rec[12] = num(r.ratio(vLoopback))
					rec[13] = num(r.ratio(vNative))
					rec[17] = num(r.ratio(vLoopbackDefaults))
				}
				rec[15] = r.goal.String()
				rec[16] = r.status()
			}
			if t := r.reqs[v]; t != nil && t.ops > 0 {
				rec[18], rec[19], rec[20] = r.per, num(t.total()), t.csv()
			}
			_ = w.Write(rec)
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// missed lists the rows whose goal was missed, for the summary line.
func (rp *report) missed() []string {
	var out []string
	for _, r := range rp.rows {
		if r.status() == "miss" {
			out = append(out, r.id+" "+r.name)
		}
	}
	return out
}

func joinOr(xs []string, empty string) string {
	if len(xs) == 0 {
		return empty
	}
	return strings.Join(xs, "; ")
}
