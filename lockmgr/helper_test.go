package lockmgr

// The test binary doubles as a helper process: with LOCKMGR_HELPER=1 it
// opens a Manager on LOCKMGR_HELPER_ROOT and executes commands read from
// stdin, one per line, answering each with one line on stdout:
//
//	acquire SCAN MODE TIMEOUT_MS [KEY]  ok T WAITED | err KIND MSG (TIMEOUT_MS 0: none)
//	try SCAN MODE [KEY]                 ok T 0 | err KIND MSG
//	bg NAME acquire|try ...             ok; later: bg NAME <answer>
//	release SCAN                        ok T (T taken just before Release)
//	status SCAN | info SCAN | purge dry|real | stats
//	                                    ok JSON
//	intervals SCAN MODE N HOLD_US GAP_US
//	                                    iv MODE BEGIN END (N lines), ok
//	increment SCAN FILE N G             ok | err torn ...
//	readers SCAN FILE G                 ok (started); later "stop": ok READS TORN
//	share SCAN G HOLD_US                ok (all G hold once); later "stop": ok CYCLES
//	handover SCAN N HOLD_US             per round: held, then rel T; reads "next"
//	close                               ok
//
// Times are CLOCK_MONOTONIC nanoseconds, comparable across processes
// (and with Python's time.monotonic_ns()).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"scanlockfs/internal/testutil"
)

const (
	helperEnv     = "LOCKMGR_HELPER"
	helperRootEnv = "LOCKMGR_HELPER_ROOT"
	helperOptsEnv = "LOCKMGR_HELPER_OPTS"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

// mono returns CLOCK_MONOTONIC in nanoseconds.
var mono = testutil.Now

// parseOpts turns "info=0,purge=0,timeout=5s,lockdir=D,infodelay=0,readonly=1" into
// options, plus the user name helpers record in their owners.
func parseOpts(spec string) ([]Option, string) {
	opts := []Option{WithStaleCleanup(false)}
	user := "helper"
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "":
		case "info":
			opts = append(opts, WithInfoFiles(v == "1"))
		case "purge":
			opts = append(opts, WithStaleCleanup(v == "1"))
		case "timeout":
			d, _ := time.ParseDuration(v)
			opts = append(opts, WithTimeout(d))
		case "infodelay":
			d, _ := time.ParseDuration(v)
			opts = append(opts, WithInfoDelay(d))
		case "lockdir":
			opts = append(opts, WithLockDir(v))
		case "readonly":
			opts = append(opts, WithReadOnly(v == "1"))
		case "user":
			user = v
		default:
			panic("unknown helper option " + k)
		}
	}
	return opts, user
}

type helper struct {
	m      *Manager
	user   string
	mu     sync.Mutex // guards stdout and leases
	out    *bufio.Writer
	leases map[string][]*Lease
	stop   func() string // stops the background job, returns its reply
}

func helperMain() int {
	opts, user := parseOpts(os.Getenv(helperOptsEnv))
	m, err := New(os.Getenv(helperRootEnv), opts...)
	h := &helper{m: m, user: user, out: bufio.NewWriter(os.Stdout), leases: map[string][]*Lease{}}
	if err != nil {
		h.say("err new %v", err)
		return 1
	}
	h.say("ready %d", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if f := strings.Fields(in.Text()); len(f) > 0 {
			h.run(f, in)
		}
	}
	m.Close()
	return 0
}

// acquire runs "acquire SCAN MODE TIMEOUT_MS [KEY]" or "try SCAN MODE
// [KEY]" and returns the answer.
func (h *helper) acquire(f []string) string {
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	var l *Lease
	var err error
	if f[0] == "acquire" {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if ms, _ := strconv.Atoi(arg(3)); ms > 0 { // 0: no deadline, the manager's default applies
			ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		}
		l, err = h.m.Acquire(ctx, f[1], parseMode(f[2]), h.owner(arg(4)))
		cancel()
	} else {
		l, err = h.m.TryAcquire(f[1], parseMode(f[2]), h.owner(arg(3)))
	}
	t := mono()
	if err != nil {
		return fmt.Sprintf("err %s %s", errKind(err), strings.ReplaceAll(err.Error(), "\n", " "))
	}
	h.mu.Lock()
	h.leases[f[1]] = append(h.leases[f[1]], l)
	h.mu.Unlock()
	return fmt.Sprintf("ok %d %d", t, l.Waited().Nanoseconds())
}

// failed answers "err KIND MSG" if err is not nil, and reports whether
// it did.
func (h *helper) failed(err error) bool {
	if err != nil {
		h.say("err %s %v", errKind(err), err)
	}
	return err != nil
}

func (h *helper) say(format string, a ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(h.out, format+"\n", a...)
	h.out.Flush()
}

func (h *helper) owner(key string) Owner {
	return Owner{User: h.user, Key: "helper:" + key}
}

func parseMode(s string) Mode {
	if s == "exclusive" || s == "ex" {
		return Exclusive
	}
	return Shared
}

func errKind(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{
		{ErrTimeout, "timeout"}, {ErrWouldBlock, "wouldblock"}, {ErrDeadlock, "deadlock"},
		{ErrClosed, "closed"}, {ErrInvalidScanID, "invalid"}, {ErrNotHeld, "notheld"},
		{ErrLockFile, "lockfile"}, {ErrReadOnly, "readonly"}, {ErrRoot, "root"},
		{context.Canceled, "canceled"},
	} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "other"
}

func (h *helper) run(f []string, in *bufio.Scanner) {
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	num := func(i int) int {
		n, _ := strconv.Atoi(arg(i))
		return n
	}
	switch f[0] {
	case "acquire", "try":
		h.say("%s", h.acquire(f))
	case "bg":
		// bg NAME acquire|try ...: runs in the background, answers "ok"
		// now and "bg NAME <answer>" when done.
		go func() { h.say("bg %s %s", f[1], h.acquire(f[2:])) }()
		h.say("ok")
	case "release":
		h.mu.Lock()
		ls := h.leases[f[1]]
		var l *Lease
		if len(ls) > 0 {
			l = ls[len(ls)-1]
			h.leases[f[1]] = ls[:len(ls)-1]
		}
		h.mu.Unlock()
		t := mono()
		if h.failed(l.Release()) {
			return
		}
		h.say("ok %d", t)
	case "status", "info", "purge", "stats":
		var v any
		var err error
		switch f[0] {
		case "status":
			v, err = h.m.Status(f[1])
		case "info":
			v, err = h.m.ReadInfo(f[1])
		case "purge":
			v, err = h.m.PurgeStale(f[1] == "dry")
		case "stats":
			v = h.m.Stats()
		}
		if h.failed(err) {
			return
		}
		b, _ := json.Marshal(v)
		h.say("ok %s", b)
	case "intervals":
		mode := parseMode(f[2])
		hold := time.Duration(num(4)) * time.Microsecond
		gap := time.Duration(num(5)) * time.Microsecond
		for range num(3) {
			l, err := h.m.Acquire(context.Background(), f[1], mode, h.owner("iv"))
			if h.failed(err) {
				return
			}
			b := mono()
			spin(hold)
			e := mono()
			l.Release()
			h.say("iv %s %d %d", mode, b, e)
			spin(gap)
		}
		h.say("ok")
	case "increment":
		if err := incrementConcurrently(h.m, f[1], f[2], num(3), num(4), h.user); err != nil {
			h.say("err torn %v", err)
			return
		}
		h.say("ok")
	case "readers":
		var reads, torn atomic.Int64
		var firstTorn atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range num(3) {
			wg.Go(func() {
				o := Owner{User: h.user, Key: "reader:" + strconv.Itoa(g)}
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := readCounter(h.m, f[1], f[2], o); err != nil {
						torn.Add(1)
						firstTorn.CompareAndSwap(nil, err.Error())
					}
					reads.Add(1)
				}
			})
		}
		h.stop = func() string {
			close(stop)
			wg.Wait()
			return fmt.Sprintf("ok %d %d %v", reads.Load(), torn.Load(), firstTorn.Load())
		}
		h.say("ok")
	case "share":
		hold := time.Duration(num(3)) * time.Microsecond
		var cycles atomic.Int64
		stop := make(chan struct{})
		var started sync.WaitGroup
		var wg sync.WaitGroup
		for g := range num(2) {
			started.Add(1)
			wg.Go(func() {
				o := Owner{User: h.user, Key: "share:" + strconv.Itoa(g)}
				first := true
				for {
					l, err := h.m.Acquire(context.Background(), f[1], Shared, o)
					if err == nil {
						cycles.Add(1)
						if first {
							started.Done()
							first = false
						}
						// Stagger the goroutines so that their holds overlap:
						// this process then never drops its shared flock.
						time.Sleep(hold + time.Duration(g)*hold/2)
						l.Release()
					}
					select {
					case <-stop:
						if first {
							started.Done()
						}
						return
					default:
					}
				}
			})
		}
		started.Wait()
		h.stop = func() string {
			close(stop)
			wg.Wait()
			return fmt.Sprintf("ok %d", cycles.Load())
		}
		h.say("ok")
	case "stop":
		if h.stop == nil {
			h.say("err other no background job")
			return
		}
		h.say("%s", h.stop())
		h.stop = nil
	case "handover":
		hold := time.Duration(num(3)) * time.Microsecond
		for range num(2) {
			l, err := h.m.Acquire(context.Background(), f[1], Exclusive, h.owner("handover"))
			if h.failed(err) {
				return
			}
			h.say("held")
			time.Sleep(hold)
			t := mono()
			l.Release()
			h.say("rel %d", t)
			if !in.Scan() || in.Text() != "next" {
				return
			}
		}
	case "close":
		h.m.Close()
		h.say("ok")
	default:
		h.say("err other unknown command %q", f[0])
	}
}

// spin waits d without giving the processor away to a timer's latency:
// holds in interval tests must be short and precise.
func spin(d time.Duration) {
	if d <= 0 {
		return
	}
	if d > 2*time.Millisecond {
		time.Sleep(d)
		return
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
		runtime.Gosched()
	}
}
