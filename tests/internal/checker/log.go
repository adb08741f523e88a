// Package checker proves, after the fact, that scan locks excluded each
// other: every process that takes locks records what it held in its own
// log file, and Check reads all the logs and reports every violation.
//
// # Log format
//
// One event per line, space-separated; times are CLOCK_MONOTONIC
// nanoseconds (the same clock in every process of the machine):
//
//	want  PROC SEQ SCAN MODE T          the request is about to be made
//	begin PROC SEQ SCAN MODE T          the lock was granted (the call returned)
//	end   PROC SEQ SCAN MODE T READ WROTE   just before the lock is released
//	fail  PROC SEQ SCAN MODE T ERROR    the request failed
//
// PROC names the process, SEQ numbers its requests, SCAN is quoted as a
// Go string (spaces as \x20), MODE is "shared" or "exclusive". READ is the counter
// value the holder read under the lock (-1: not read, "torn": the file
// was half-written), WROTE the value it wrote (-1: none). ERROR is one
// word, as ErrName names an error.
//
// A holder records begin after its lock call returned and end before it
// releases, so the recorded interval lies inside the time it really held
// the lock: if the locks are correct, recorded intervals that must
// exclude each other never overlap, whatever the scheduling. Logs are
// written by each process to its own file with one write(2) per line, not
// through the lock under test, so a process killed in the middle leaves a
// log that is complete up to its last event.
package checker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"scanlockfs/internal/testutil"
)

// Event kinds.
const (
	Want  = "want"
	Begin = "begin"
	End   = "end"
	Fail  = "fail"
)

// Lock modes as they appear in logs.
const (
	Shared    = "shared"
	Exclusive = "exclusive"
)

// None is the READ or WROTE value of a holder that did not read or write
// the counter; Torn is the READ value of one that found it half-written.
const (
	None = -1
	Torn = -2
)

// Event is one line of a log.
type Event struct {
	Kind  string
	Proc  string
	Seq   uint64
	Scan  string
	Mode  string
	T     int64 // CLOCK_MONOTONIC ns
	Read  int   // end: counter value read (None, Torn or >= 0)
	Wrote int   // end: counter value written (None or >= 0)
	Err   string
	Line  int // line number in its log, for messages
}

// Now is CLOCK_MONOTONIC in nanoseconds, comparable across processes.
func Now() int64 { return testutil.Now() }

// Log appends one process's events to its own file.
type Log struct {
	mu   sync.Mutex
	f    *os.File
	proc string
	err  error
}

// Create creates the log file path for process proc.
func Create(path, proc string) (*Log, error) {
	if proc == "" || strings.ContainsAny(proc, " \t\n") {
		return nil, fmt.Errorf("checker: bad process name %q", proc)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &Log{f: f, proc: proc}, nil
}

// Want records that request seq for scan in mode is about to be made.
func (l *Log) Want(seq uint64, scan, mode string, t int64) {
	l.line(Want, seq, scan, mode, t, "")
}

// Begin records that request seq was granted at t.
func (l *Log) Begin(seq uint64, scan, mode string, t int64) {
	l.line(Begin, seq, scan, mode, t, "")
}

// End records that request seq is about to be released at t, having read
// and written the given counter values (None if not).
func (l *Log) End(seq uint64, scan, mode string, t int64, read, wrote int) {
	r := strconv.Itoa(read)
	if read == Torn {
		r = "torn"
	}
	l.line(End, seq, scan, mode, t, r+" "+strconv.Itoa(wrote))
}

// Fail records that request seq failed with err.
func (l *Log) Fail(seq uint64, scan, mode string, t int64, err string) {
	if err == "" {
		err = "error"
	}
	l.line(Fail, seq, scan, mode, t, strings.Join(strings.Fields(err), "_"))
}

func (l *Log) line(kind string, seq uint64, scan, mode string, t int64, rest string) {
	s := kind + " " + l.proc + " " + strconv.FormatUint(seq, 10) + " " + quoteScan(scan) + " " + mode + " " + strconv.FormatInt(t, 10)
	if rest != "" {
		s += " " + rest
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.WriteString(s + "\n"); err != nil && l.err == nil {
		l.err = err
	}
}

// Close closes the log and returns the first write error, if any.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.err, l.f.Close())
}

// Parse reads a log. Lines that do not parse are returned as errors
// naming the line; the events that parsed are returned too.
func Parse(r io.Reader) ([]Event, []error) {
	var evs []Event
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		ev, err := parseLine(sc.Text())
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %v: %q", n, err, sc.Text()))
			continue
		}
		ev.Line = n
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	return evs, errs
}

// ParseFile reads the log at path.
func ParseFile(path string) ([]Event, []error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, []error{err}
	}
	defer f.Close()
	evs, errs := Parse(f)
	for i, e := range errs {
		errs[i] = fmt.Errorf("%s: %w", path, e)
	}
	return evs, errs
}

func parseLine(s string) (Event, error) {
	var ev Event
	f := strings.Fields(s)
	if len(f) < 6 {
		return ev, errors.New("too few fields")
	}
	ev.Kind, ev.Proc = f[0], f[1]
	switch ev.Kind {
	case Want, Begin, End, Fail:
	default:
		return ev, fmt.Errorf("unknown event %q", ev.Kind)
	}
	var err error
	if ev.Seq, err = strconv.ParseUint(f[2], 10, 64); err != nil {
		return ev, fmt.Errorf("bad sequence number %q", f[2])
	}
	if ev.Scan, err = strconv.Unquote(f[3]); err != nil {
		return ev, fmt.Errorf("bad scan %s", f[3])
	}
	rest := f[4:]
	if len(rest) < 2 {
		return ev, errors.New("too few fields")
	}
	ev.Mode = rest[0]
	if ev.Mode != Shared && ev.Mode != Exclusive {
		return ev, fmt.Errorf("bad mode %q", ev.Mode)
	}
	if ev.T, err = strconv.ParseInt(rest[1], 10, 64); err != nil || ev.T <= 0 {
		return ev, fmt.Errorf("bad time %q", rest[1])
	}
	ev.Read, ev.Wrote = None, None
	switch ev.Kind {
	case End:
		if len(rest) != 4 {
			return ev, errors.New("end needs READ and WROTE")
		}
		if rest[2] == "torn" {
			ev.Read = Torn
		} else if ev.Read, err = strconv.Atoi(rest[2]); err != nil || ev.Read < None {
			return ev, fmt.Errorf("bad READ %q", rest[2])
		}
		if ev.Wrote, err = strconv.Atoi(rest[3]); err != nil || ev.Wrote < None {
			return ev, fmt.Errorf("bad WROTE %q", rest[3])
		}
	case Fail:
		if len(rest) != 3 {
			return ev, errors.New("fail needs ERROR")
		}
		ev.Err = rest[2]
	default:
		if len(rest) != 2 {
			return ev, errors.New("trailing fields")
		}
	}
	return ev, nil
}

// quoteScan quotes a scan id so that it is one field: strconv.Quote
// leaves spaces alone, so they become \x20, which Unquote reads back.
func quoteScan(scan string) string {
	return strings.ReplaceAll(strconv.Quote(scan), " ", `\x20`)
}
