package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"scanlockfs/internal/testpeer"
)

const lockScan = "bench_scan"

// peerKind starts lock peers of one implementation: Go processes on
// lockmgr, or Python processes on plantdb's protocol. Each kind has its
// own scan root so that they never meet.
type peerKind struct {
	variant string
	root    string
	start   func(name string) (*proc, error)
}

func (b *bench) peerKinds() ([]*peerKind, error) {
	goRoot := filepath.Join(b.dir, "locks-go")
	kinds := []*peerKind{{variant: vGo, root: goRoot, start: func(name string) (*proc, error) {
		return b.startHelper(name, helperLockPeer, goRoot, lockScan)
	}}}
	if b.python != "" {
		pyRoot := filepath.Join(b.dir, "locks-py")
		script := filepath.Join(b.dir, "plantdb_peer.py")
		if err := os.WriteFile(script, testpeer.PlantdbPeer, 0o644); err != nil {
			return nil, err
		}
		kinds = append(kinds, &peerKind{variant: vPython, root: pyRoot, start: func(name string) (*proc, error) {
			return b.procs.start(name, []string{b.python, script, "serve", pyRoot, lockScan}, nil, nil, false)
		}})
	}
	for _, k := range kinds {
		if err := os.MkdirAll(filepath.Join(k.root, lockScan), 0o755); err != nil {
			return nil, err
		}
	}
	return kinds, nil
}

// startPeers starts n peers and waits until each is ready.
func (b *bench) startPeers(ctx context.Context, k *peerKind, name string, n int) ([]*proc, error) {
	return startReady(ctx, n, func(i int) (*proc, error) {
		return k.start(fmt.Sprintf("%s %s peer %d", k.variant, name, i))
	})
}

// startReady starts n helpers with start and waits until each says
// "ready"; the caller finishes those returned, also on error.
func startReady(ctx context.Context, n int, start func(i int) (*proc, error)) ([]*proc, error) {
	var ps []*proc
	for i := 0; i < n; i++ {
		p, err := start(i)
		if err != nil {
			return ps, err
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if _, err := p.expect(ctx, 30*time.Second, "ready"); err != nil {
			return ps, err
		}
	}
	return ps, nil
}

func finishAll(ps []*proc) error {
	var first error
	for _, p := range ps {
		_ = p.send("quit")
		if err := p.finish(10 * time.Second); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func nsField(f []string, i int) (int64, error) {
	if i >= len(f) {
		return 0, fmt.Errorf("answer %q has no field %d", f, i)
	}
	return strconv.ParseInt(f[i], 10, 64)
}

// expectNS waits for p's answer word and returns its field i, a time in
// nanoseconds.
func (p *proc) expectNS(ctx context.Context, timeout time.Duration, word string, i int) (int64, error) {
	f, err := p.expect(ctx, timeout, word)
	if err != nil {
		return 0, err
	}
	return nsField(f, i)
}

// workloadLocks is 7: the lock manager alone against the Python peer.
func (b *bench) workloadLocks(ctx context.Context) error {
	kinds, err := b.peerKinds()
	if err != nil {
		return err
	}
	rp := b.rep
	rp.define(sectionLock, "7a", "uncontended exclusive acquire+release", "µs/op", false, goal{goalVsPython, 0.1})
	rp.define(sectionLock, "7b", "uncontended shared acquire+release", "µs/op", false, goal{goalVsPython, 0.1})
	rp.define(sectionLock, "7c", "cross-process handover, median", "ms", false, goal{goalAbsMax, 1})
	rp.define(sectionLock, "7d", "cross-process handover, 99th percentile", "ms", false, goal{goalAbsMax, 5})
	if err := b.lockUncontended(ctx, kinds); err != nil {
		return err
	}
	if err := b.lockHandover(ctx, kinds); err != nil {
		return err
	}
	return b.lockWriterWait(ctx, kinds)
}

func (b *bench) lockUncontended(ctx context.Context, kinds []*peerKind) error {
	peers := map[*peerKind]*proc{}
	defer func() {
		for _, p := range peers {
			_ = finishAll([]*proc{p})
		}
	}()
	for _, k := range kinds {
		ps, err := b.startPeers(ctx, k, "uncontended", 1)
		if err != nil {
			return err
		}
		peers[k] = ps[0]
	}
	for rep := -b.cfg.Warmup; rep < b.cfg.Reps; rep++ {
		for _, mode := range []struct{ id, name string }{{"7a", "exclusive"}, {"7b", "shared"}} {
			for _, k := range kinds {
				n := b.cfg.LockOps
				if k.variant == vPython {
					n = b.cfg.PyLockOps
				}
				p := peers[k]
				if err := p.send("loop %s %d", mode.name, n); err != nil {
					return err
				}
				f, err := p.expect(ctx, time.Minute, "loop")
				if err != nil {
					return err
				}
				total, err := nsField(f, 1)
				if err != nil {
					return err
				}
				if rep >= 0 {
					b.rep.add(mode.id, k.variant, float64(total)/1e3/float64(n))
				}
			}
		}
	}
	return nil
}

// lockHandover measures, between two processes, the time from the start
// of the holder's release to the waiter's grant. The holder releases
// after a random delay of 1-100 ms, so that the waiter's polling phase is
// random as in real use; rounds of both kinds alternate.
func (b *bench) lockHandover(ctx context.Context, kinds []*peerKind) error {
	var pairs []*handoverPair
	defer func() {
		for _, p := range pairs {
			_ = finishAll(p.all)
		}
	}()
	maxRounds := 0
	for _, k := range kinds {
		ps, err := b.startPeers(ctx, k, "handover", 2)
		if err != nil {
			return err
		}
		pr := &handoverPair{k: k, holder: ps[0], waiter: ps[1], rounds: b.cfg.Handovers, all: ps}
		if k.variant == vPython {
			pr.rounds = b.cfg.PyHandovers
		}
		pairs = append(pairs, pr)
		maxRounds = max(maxRounds, pr.rounds)
		_, _, granted, err := pr.holder.acquire(ctx, 10000, 15*time.Second)
		if err != nil {
			return err
		}
		if !granted {
			return fmt.Errorf("%s handover: the first holder timed out after 10 s", k.variant)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < maxRounds; round++ {
		for _, pr := range pairs {
			if round >= pr.rounds {
				continue
			}
			delay := time.Millisecond + time.Duration(rng.Int64N(int64(99*time.Millisecond)))
			if err := pr.handover(ctx, delay); err != nil {
				return err
			}
		}
	}
	for _, pr := range pairs {
		if _, err := pr.holder.release(ctx); err != nil {
			return err
		}
		for _, x := range pr.lat {
			b.rep.add("7c", pr.k.variant, x)
		}
		b.rep.add("7d", pr.k.variant, percentile(pr.lat, 0.99))
	}
	return nil
}

// handoverPair is two lock peers of one kind that pass the exclusive
// lock back and forth.
type handoverPair struct {
	k              *peerKind
	holder, waiter *proc
	rounds         int
	all            []*proc
	lat            []float64 // ms from the start of a release to the grant
}

// handover has the waiter ask for the lock and, delay later, the holder
// release it; it records the latency and swaps the roles.
func (pr *handoverPair) handover(ctx context.Context, delay time.Duration) error {
	if err := pr.waiter.send("acquire exclusive 10000"); err != nil {
		return err
	}
	if _, err := pr.waiter.expect(ctx, 15*time.Second, "waiting"); err != nil {
		return err
	}
	time.Sleep(delay)
	t0, err := pr.holder.release(ctx)
	if err != nil {
		return err
	}
	f, err := pr.waiter.expect(ctx, 15*time.Second, "ok", "timeout")
	if err != nil {
		return err
	}
	if f[0] != "ok" {
		return fmt.Errorf("%s handover: the waiter timed out after 10 s", pr.k.variant)
	}
	t1, err := nsField(f, 2)
	if err != nil {
		return err
	}
	pr.lat = append(pr.lat, float64(t1-t0)/1e6)
	pr.holder, pr.waiter = pr.waiter, pr.holder
	return nil
}

// acquire asks lock peer p for the exclusive lock with the peer's
// timeout timeoutMS, allowing wait for the answer, and returns the
// request's start and end times and whether it was granted.
func (p *proc) acquire(ctx context.Context, timeoutMS int64, wait time.Duration) (t0, t1 int64, granted bool, err error) {
	if err := p.send("acquire exclusive %d", timeoutMS); err != nil {
		return 0, 0, false, err
	}
	if _, err := p.expect(ctx, 15*time.Second, "waiting"); err != nil {
		return 0, 0, false, err
	}
	f, err := p.expect(ctx, wait, "ok", "timeout")
	if err != nil {
		return 0, 0, false, err
	}
	t0, err1 := nsField(f, 1)
	t1, err2 := nsField(f, 2)
	if err1 != nil || err2 != nil {
		return 0, 0, false, fmt.Errorf("bad answer %q", f)
	}
	return t0, t1, f[0] == "ok", nil
}

// release has lock peer p release its lock and returns when the
// release started.
func (p *proc) release(ctx context.Context) (int64, error) {
	if err := p.send("release"); err != nil {
		return 0, err
	}
	return p.expectNS(ctx, 15*time.Second, "released", 1)
}

// lockWriterWait measures how long a writer waits for the exclusive lock
// while reader processes keep the scan continuously shared (each holds
// it for -reader-hold and takes it again at once), and checks exclusion:
// a writer hold that overlaps a reader hold is a violation.
func (b *bench) lockWriterWait(ctx context.Context, kinds []*peerKind) error {
	c := b.cfg
	rp := b.rep
	rp.define(sectionLock, "7e", fmt.Sprintf("writer wait under %d readers, median", c.Readers), "ms", false, goal{})
	rp.define(sectionLock, "7f", fmt.Sprintf("writer wait under %d readers, 99th percentile", c.Readers), "ms", false, goal{goalAbsMax, 50})
	rp.define(sectionLock, "7g", fmt.Sprintf("writer requests timed out (after %v)", c.WriterTimeout), "%", false, goal{})
	rp.define(sectionLock, "7h", "writer holds overlapping a reader hold (exclusion violations)", "count", false, goal{})
	for _, k := range kinds {
		if err := b.writerWaitOne(ctx, k); err != nil {
			return err
		}
	}
	rp.notef("7e/7f: a timed-out request counts with its full wait (%v); Python: plantdb's release unlinks the lock file, so a writer can lock a new inode while readers hold the old one (7h)", c.WriterTimeout)
	return nil
}

// writerWaitOne is workload 7e-7h for one kind of peer.
func (b *bench) writerWaitOne(ctx context.Context, k *peerKind) error {
	c := b.cfg
	readers, err := b.startPeers(ctx, k, "reader", c.Readers)
	defer func() { _ = finishAll(readers) }()
	if err != nil {
		return err
	}
	writers, err := b.startPeers(ctx, k, "writer", 1)
	defer func() { _ = finishAll(writers) }()
	if err != nil {
		return err
	}
	w := writers[0]
	for _, r := range readers {
		if err := r.send("readers %d", c.ReaderHold.Microseconds()); err != nil {
			return err
		}
		if _, err := r.expect(ctx, 10*time.Second, "reading"); err != nil {
			return err
		}
	}
	time.Sleep(50 * time.Millisecond) // let the readers' holds overlap
	n := c.WriterWaits
	if k.variant == vPython {
		n = c.PyWriterWaits
	}
	var waits []float64
	var holds [][2]int64
	timeouts := 0
	for i := 0; i < n; i++ {
		t0, t1, granted, err := w.acquire(ctx, c.WriterTimeout.Milliseconds(), c.WriterTimeout+30*time.Second)
		if err != nil {
			return err
		}
		waits = append(waits, float64(t1-t0)/1e6)
		if !granted {
			timeouts++
		} else {
			r0, err := w.release(ctx)
			if err != nil {
				return err
			}
			holds = append(holds, [2]int64{t1, r0})
		}
		time.Sleep(10 * time.Millisecond)
	}
	var intervals [][2]int64
	for _, r := range readers {
		ivs, err := r.stopReaders(ctx)
		if err != nil {
			return err
		}
		intervals = append(intervals, ivs...)
	}
	for _, x := range waits {
		b.rep.add("7e", k.variant, x)
	}
	b.rep.add("7f", k.variant, percentile(waits, 0.99))
	b.rep.add("7g", k.variant, 100*float64(timeouts)/float64(n))
	b.rep.add("7h", k.variant, float64(overlapping(holds, intervals)))
	return nil
}

// stopReaders stops lock peer p's readers and returns their holds.
func (p *proc) stopReaders(ctx context.Context) ([][2]int64, error) {
	if err := p.send("stop"); err != nil {
		return nil, err
	}
	f, err := p.expect(ctx, 60*time.Second, "intervals")
	if err != nil {
		return nil, err
	}
	var intervals [][2]int64
	for i := 1; i+1 < len(f); i += 2 {
		a, err1 := strconv.ParseInt(f[i], 10, 64)
		z, err2 := strconv.ParseInt(f[i+1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad intervals from %s", p.name)
		}
		intervals = append(intervals, [2]int64{a, z})
	}
	return intervals, nil
}

// overlapping counts the holds that overlap one of intervals.
func overlapping(holds, intervals [][2]int64) int {
	n := 0
	for _, h := range holds {
		for _, iv := range intervals {
			if iv[0] < h[1] && h[0] < iv[1] {
				n++
				break
			}
		}
	}
	return n
}
