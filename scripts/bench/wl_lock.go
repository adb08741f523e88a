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
	var ps []*proc
	for i := 0; i < n; i++ {
		p, err := k.start(fmt.Sprintf("%s %s peer %d", k.variant, name, i))
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
	type pair struct {
		k              *peerKind
		holder, waiter *proc
		rounds         int
		all            []*proc
	}
	var pairs []*pair
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
		pr := &pair{k: k, holder: ps[0], waiter: ps[1], rounds: b.cfg.Handovers, all: ps}
		if k.variant == vPython {
			pr.rounds = b.cfg.PyHandovers
		}
		pairs = append(pairs, pr)
		maxRounds = max(maxRounds, pr.rounds)
		if err := pr.holder.send("acquire exclusive 10000"); err != nil {
			return err
		}
		if _, err := pr.holder.expect(ctx, 15*time.Second, "waiting"); err != nil {
			return err
		}
		if _, err := pr.holder.expect(ctx, 15*time.Second, "ok"); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	lat := map[string][]float64{}
	for round := 0; round < maxRounds; round++ {
		for _, pr := range pairs {
			if round >= pr.rounds {
				continue
			}
			if err := pr.waiter.send("acquire exclusive 10000"); err != nil {
				return err
			}
			if _, err := pr.waiter.expect(ctx, 15*time.Second, "waiting"); err != nil {
				return err
			}
			time.Sleep(time.Millisecond + time.Duration(rng.Int64N(int64(99*time.Millisecond))))
			if err := pr.holder.send("release"); err != nil {
				return err
			}
			f, err := pr.holder.expect(ctx, 15*time.Second, "released")
			if err != nil {
				return err
			}
			t0, err := nsField(f, 1)
			if err != nil {
				return err
			}
			f, err = pr.waiter.expect(ctx, 15*time.Second, "ok", "timeout")
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
			lat[pr.k.variant] = append(lat[pr.k.variant], float64(t1-t0)/1e6)
			pr.holder, pr.waiter = pr.waiter, pr.holder
		}
	}
	for _, pr := range pairs {
		if err := pr.holder.send("release"); err != nil {
			return err
		}
		if _, err := pr.holder.expect(ctx, 15*time.Second, "released"); err != nil {
			return err
		}
		xs := lat[pr.k.variant]
		for _, x := range xs {
			b.rep.add("7c", pr.k.variant, x)
		}
		b.rep.add("7d", pr.k.variant, percentile(xs, 0.99))
	}
	return nil
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
	timeoutMS := c.WriterTimeout.Milliseconds()
	var waits []float64
	var holds [][2]int64
	timeouts := 0
	for i := 0; i < n; i++ {
		if err := w.send("acquire exclusive %d", timeoutMS); err != nil {
			return err
		}
		if _, err := w.expect(ctx, 10*time.Second, "waiting"); err != nil {
			return err
		}
		f, err := w.expect(ctx, c.WriterTimeout+30*time.Second, "ok", "timeout")
		if err != nil {
			return err
		}
		t0, err1 := nsField(f, 1)
		t1, err2 := nsField(f, 2)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("bad answer %q", f)
		}
		waits = append(waits, float64(t1-t0)/1e6)
		if f[0] == "timeout" {
			timeouts++
		} else {
			if err := w.send("release"); err != nil {
				return err
			}
			f, err := w.expect(ctx, 10*time.Second, "released")
			if err != nil {
				return err
			}
			r0, err := nsField(f, 1)
			if err != nil {
				return err
			}
			holds = append(holds, [2]int64{t1, r0})
		}
		time.Sleep(10 * time.Millisecond)
	}
	var intervals [][2]int64
	for _, r := range readers {
		if err := r.send("stop"); err != nil {
			return err
		}
		f, err := r.expect(ctx, 60*time.Second, "intervals")
		if err != nil {
			return err
		}
		for i := 1; i+1 < len(f); i += 2 {
			a, err1 := strconv.ParseInt(f[i], 10, 64)
			z, err2 := strconv.ParseInt(f[i+1], 10, 64)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("bad intervals from %s", r.name)
			}
			intervals = append(intervals, [2]int64{a, z})
		}
	}
	overlaps := 0
	for _, h := range holds {
		for _, iv := range intervals {
			if iv[0] < h[1] && h[0] < iv[1] {
				overlaps++
				break
			}
		}
	}
	for _, x := range waits {
		b.rep.add("7e", k.variant, x)
	}
	b.rep.add("7f", k.variant, percentile(waits, 0.99))
	b.rep.add("7g", k.variant, 100*float64(timeouts)/float64(n))
	b.rep.add("7h", k.variant, float64(overlaps))
	return nil
}
