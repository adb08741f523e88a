package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
)

// Workload 10: the cluster lock (--etcd), against a local one-member
// etcd on 127.0.0.1 that the bench starts (Debian's etcd-server). Two
// "hosts" are two mounts of one SOURCE with lock directories of their
// own, so that only etcd excludes them.
const (
	etcdScans        = 20 // scans of the open+close measure; every open of a new scan takes a cluster lock
	etcdFilesPerScan = 10
)

// workloadEtcd is 10.
func (b *bench) workloadEtcd(ctx context.Context) error {
	if _, err := os.Stat(testutil.EtcdBinary); err != nil {
		b.rep.notef("workload 10 skipped: %s missing (apt-get install etcd-server)", testutil.EtcdBinary)
		return nil
	}
	e, err := testutil.LaunchEtcd(filepath.Join(b.dir, "etcd"), 1)
	if e != nil {
		defer e.Stop()
	}
	if err != nil {
		return err
	}
	rp := b.rep
	rp.define(sectionLock, "10a", "etcd: uncontended exclusive acquire+release", "ms", false, goal{goalAbsMax, 2})
	rp.define(sectionLock, "10b", "etcd: hand-over between two mounts, median", "ms", false, goal{goalAbsMax, 5})
	rp.define(sectionFS, "10c", "open+close of files in 20 scans, mount without --etcd", "µs/op", false, goal{})
	rp.define(sectionFS, "10d", "open+close of files in 20 scans, mount with --etcd", "µs/op", false, goal{})
	if err := b.etcdUncontended(e.Endpoints); err != nil {
		return err
	}
	src := filepath.Join(b.dir, "etcd-src")
	var paths []string
	for s := range etcdScans {
		for f := range etcdFilesPerScan {
			p := filepath.Join(fmt.Sprintf("scan_%03d", s), fmt.Sprintf("f%02d", f))
			if err := os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(src, p), []byte("x"), 0o644); err != nil {
				return err
			}
			paths = append(paths, p)
		}
	}
	host := func(label string) (*daemon, error) {
		return b.mount(ctx, vScanlockfs, label, src, "--lock-dir", filepath.Join(b.dir, label+"-locks"),
			"--etcd", strings.Join(e.Endpoints, ","))
	}
	ha, err := host("etcd-a")
	if err != nil {
		return err
	}
	hb, err := host("etcd-b")
	if err != nil {
		return err
	}
	plain, err := b.mount(ctx, vScanlockfs, "etcd-plain", src, "--lock-dir", filepath.Join(b.dir, "plain-locks"))
	if err != nil {
		return err
	}
	if err := b.etcdOpenClose(plain.mnt, ha.mnt, paths); err != nil {
		return err
	}
	b.rep.notef("10: open+close with --etcd / without: %s", ratioCell(rp.byID["10d"].median(vScanlockfs)/rp.byID["10c"].median(vScanlockfs)))
	return b.etcdHandover(ctx, ha.mnt, hb.mnt, paths[0])
}

// etcdUncontended times exclusive acquire+release of one scan by a lock
// manager with --etcd in this process, one sample per operation.
func (b *bench) etcdUncontended(endpoints []string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	root := filepath.Join(b.dir, "etcd-lockmgr")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	m, err := lockmgr.New(root, lockmgr.WithEtcd(lockmgr.EtcdConfig{Client: cli}))
	if err != nil {
		return err
	}
	defer m.Close()
	owner := lockmgr.ProcessOwner()
	n := b.cfg.LockOps
	for i := -n / 10; i < n; i++ {
		start := time.Now()
		l, err := m.Acquire(context.Background(), lockScan, lockmgr.Exclusive, owner)
		if err != nil {
			return err
		}
		if err := l.Release(); err != nil {
			return err
		}
		if i >= 0 { // the first tenth warms up
			b.rep.add("10a", vGo, float64(time.Since(start).Nanoseconds())/1e6)
		}
	}
	return nil
}

// etcdOpenClose times open+close of every file through a mount without
// and one with --etcd, interleaved.
func (b *bench) etcdOpenClose(plain, withEtcd string, paths []string) error {
	for rep := -b.cfg.Warmup; rep < b.cfg.Reps; rep++ {
		for _, m := range []struct{ id, mnt string }{{"10c", plain}, {"10d", withEtcd}} {
			start := time.Now()
			for _, p := range paths {
				fd, err := openRetry(filepath.Join(m.mnt, p), unix.O_RDONLY, 0)
				if err != nil {
					return fmt.Errorf("open %s: %w", p, err)
				}
				unix.Close(fd)
			}
			if rep >= 0 {
				b.rep.add(m.id, vScanlockfs, perOp(time.Since(start), len(paths)))
			}
		}
	}
	return nil
}

// etcdHandover measures the time from the start of a writer's close on
// one mount to the open of the writer waiting on the other mount, the
// two taking turns. The holder closes after a random 1-50 ms, so that
// the waiter is queued in etcd.
func (b *bench) etcdHandover(ctx context.Context, mntA, mntB, rel string) error {
	var hs []*proc
	defer func() { _ = finishAll(hs) }()
	for _, name := range []string{"etcd holder A", "etcd holder B"} {
		p, err := b.startHelper(name, helperHolder)
		if err != nil {
			return err
		}
		hs = append(hs, p)
		if _, err := p.expect(ctx, 30*time.Second, "ready"); err != nil {
			return err
		}
	}
	paths := []string{filepath.Join(mntA, rel), filepath.Join(mntB, rel)}
	if err := hs[0].send("open w %s", paths[0]); err != nil {
		return err
	}
	for _, w := range []string{"opening", "opened"} {
		if _, err := hs[0].expect(ctx, 30*time.Second, w); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range b.cfg.Handovers {
		holder, waiter := hs[round%2], hs[(round+1)%2]
		if err := waiter.send("open w %s", paths[(round+1)%2]); err != nil {
			return err
		}
		if _, err := waiter.expect(ctx, 30*time.Second, "opening"); err != nil {
			return err
		}
		time.Sleep(time.Millisecond + time.Duration(rng.Int64N(int64(49*time.Millisecond))))
		if err := holder.send("close"); err != nil {
			return err
		}
		f, err := holder.expect(ctx, 30*time.Second, "closing")
		if err != nil {
			return err
		}
		t0, err := nsField(f, 1)
		if err != nil {
			return err
		}
		if f, err = waiter.expect(ctx, 30*time.Second, "opened"); err != nil {
			return err
		}
		t1, err := nsField(f, 1)
		if err != nil {
			return err
		}
		if _, err := holder.expect(ctx, 30*time.Second, "closed"); err != nil {
			return err
		}
		b.rep.add("10b", vGo, float64(t1-t0)/1e6)
	}
	return nil
}
