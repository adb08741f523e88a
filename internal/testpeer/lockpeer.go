package testpeer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
)

// ServeLockPeer is the Go side of the lock peer protocol that
// plantdb_peer.py's serve command speaks too, so that a driver (the
// benchmark's workload 7) handles both alike: it locks scan of root
// with lockmgr, as this process, and answers the commands read from in
// on out (times are CLOCK_MONOTONIC nanoseconds):
//
//	acquire shared|exclusive TIMEOUT_MS  "waiting T0", then "ok T0 T1" or "timeout T0 T1"
//	release                              "released T0 T1"
//	loop shared|exclusive N              "loop TOTAL_NS" (N uncontended acquire+release)
//	readers HOLD_US                      "reading"; a goroutine holds the scan shared for
//	                                     HOLD_US, releases it and takes it again until "stop"
//	stop                                 "intervals T0 T1 T0 T1 ..." (the readers' holds)
//	quit (or end of input)
//
// It prints "ready" first. A bad command or a lock error other than a
// timeout ends it with that error.
func ServeLockPeer(root, scan string, in io.Reader, out io.Writer) error {
	m, err := lockmgr.New(root)
	if err != nil {
		return err
	}
	defer m.Close()
	p := &lockPeer{m: m, scan: scan, owner: lockmgr.ProcessOwner(), out: out}
	p.say("ready")
	err = Serve(in, p.run)
	if p.held != nil {
		_ = p.held.Release()
	}
	return err
}

type lockPeer struct {
	m     *lockmgr.Manager
	scan  string
	owner lockmgr.Owner
	held  *lockmgr.Lease

	outMu sync.Mutex
	out   io.Writer

	readers struct {
		stop      atomic.Bool
		done      chan struct{}
		intervals []int64
		err       error
	}
}

func (p *lockPeer) say(a ...any) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	fmt.Fprintln(p.out, a...)
}

func (p *lockPeer) run(f []string) error {
	switch {
	case f[0] == "acquire" && len(f) == 3:
		mode, ms, err := modeAndNumber(f)
		if err != nil {
			return err
		}
		t0 := testutil.Now()
		p.say("waiting", t0)
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(ms)*time.Millisecond)
		l, err := p.m.Acquire(ctx, p.scan, mode, p.owner)
		t1 := testutil.Now()
		cancel()
		switch {
		case err == nil:
			p.held = l
			p.say("ok", t0, t1)
		case errors.Is(err, lockmgr.ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
			p.say("timeout", t0, t1)
		default:
			return err
		}
	case f[0] == "release":
		if p.held == nil {
			return errors.New("release without a lock")
		}
		t0 := testutil.Now()
		err := p.held.Release()
		t1 := testutil.Now()
		p.held = nil
		if err != nil {
			return err
		}
		p.say("released", t0, t1)
	case f[0] == "loop" && len(f) == 3:
		mode, n, err := modeAndNumber(f)
		if err != nil {
			return err
		}
		start := testutil.Now()
		for range n {
			l, err := p.m.Acquire(context.Background(), p.scan, mode, p.owner)
			if err != nil {
				return err
			}
			if err := l.Release(); err != nil {
				return err
			}
		}
		p.say("loop", testutil.Now()-start)
	case f[0] == "readers" && len(f) == 2:
		us, err := strconv.Atoi(f[1])
		if err != nil {
			return err
		}
		p.startReaders(time.Duration(us) * time.Microsecond)
		p.say("reading")
	case f[0] == "stop":
		return p.stopReaders()
	default:
		return fmt.Errorf("bad command %q", f)
	}
	return nil
}

// startReaders starts the goroutine that keeps the scan shared.
func (p *lockPeer) startReaders(hold time.Duration) {
	r := &p.readers
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		for !r.stop.Load() {
			l, err := p.m.Acquire(context.Background(), p.scan, lockmgr.Shared, p.owner)
			if err != nil {
				r.err = err
				return
			}
			t0 := testutil.Now()
			time.Sleep(hold)
			t1 := testutil.Now()
			if err := l.Release(); err != nil {
				r.err = err
				return
			}
			r.intervals = append(r.intervals, t0, t1)
		}
	}()
}

// stopReaders stops the readers and reports their holds.
func (p *lockPeer) stopReaders() error {
	r := &p.readers
	if r.done == nil {
		return errors.New("stop without readers")
	}
	r.stop.Store(true)
	<-r.done
	if r.err != nil {
		return r.err
	}
	var sb strings.Builder
	sb.WriteString("intervals")
	for _, t := range r.intervals {
		sb.WriteString(" ")
		sb.WriteString(strconv.FormatInt(t, 10))
	}
	p.say(sb.String())
	return nil
}

// modeAndNumber parses "CMD shared|exclusive NUMBER".
func modeAndNumber(f []string) (lockmgr.Mode, int, error) {
	n, err := strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, fmt.Errorf("bad number in %q: %w", f, err)
	}
	switch f[1] {
	case "shared":
		return lockmgr.Shared, n, nil
	case "exclusive":
		return lockmgr.Exclusive, n, nil
	}
	return 0, 0, fmt.Errorf("bad mode %q", f[1])
}
