package lockmgr

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"scanlockfs/internal/testutil"
)

// etcdHosts opens n managers on one scan root, each with its own lock
// directory (so that only etcd excludes them, as on separate hosts), on
// one etcd cluster with a short TTL.
func etcdHosts(t *testing.T, n int) ([]*Manager, *testutil.Etcd) {
	t.Helper()
	return etcdHostsKeeping(t, n, 0)
}

// etcdHostsKeeping is etcdHosts with EtcdConfig.KeepIdle set to keep.
func etcdHostsKeeping(t *testing.T, n int, keep time.Duration) ([]*Manager, *testutil.Etcd) {
	t.Helper()
	e := testutil.StartEtcd(t, 1)
	root := t.TempDir()
	var ms []*Manager
	for range n {
		ms = append(ms, newManager(t, root, WithLockDir(t.TempDir()), WithInfoDelay(0),
			WithEtcd(EtcdConfig{Client: testutil.EtcdClient(t, e.Endpoints), TTL: 2 * time.Second, KeepIdle: keep})))
	}
	return ms, e
}

func TestEtcdExclusiveAcrossHosts(t *testing.T) {
	ms, _ := etcdHosts(t, 2)
	a, b := ms[0], ms[1]
	l, err := a.Acquire(context.Background(), "s1", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryAcquire("s1", Shared, testOwner("b")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("try shared on host b while host a holds exclusive: %v, want ErrWouldBlock", err)
	}
	got := make(chan time.Time, 1)
	go func() {
		lb, err := b.Acquire(context.Background(), "s1", Exclusive, testOwner("b"))
		if err != nil {
			t.Error(err)
			got <- time.Time{}
			return
		}
		got <- time.Now()
		lb.Release()
	}()
	waitFor(t, "host b's writer is queued in etcd", func() bool { return clusterWaiters(t, a, "s1") == 1 })
	released := time.Now()
	l.Release()
	if at := <-got; at.Before(released) {
		t.Fatalf("host b was granted at %v, before host a released at %v", at, released)
	}
}

// clusterWaiters counts the waiters m sees in etcd for id.
func clusterWaiters(t testing.TB, m *Manager, id string) int {
	t.Helper()
	return waitersAt(t, m, id, WhereCluster)
}

// A reader of a third host queues behind a writer that waits for the
// reader of the first, as readers do locally.
func TestEtcdReadersQueueBehindWaitingWriter(t *testing.T) {
	ms, _ := etcdHosts(t, 3)
	r1, err := ms[0].Acquire(context.Background(), "s", Shared, testOwner("r1"))
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 2)
	go acquireThenRelease(t, ms[1], "s", Exclusive, "w", order)
	waitFor(t, "the writer is queued", func() bool { return clusterWaiters(t, ms[0], "s") == 1 })
	if _, err := ms[2].TryAcquire("s", Shared, testOwner("r2")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("a reader passed a waiting writer: %v", err)
	}
	go acquireThenRelease(t, ms[2], "s", Shared, "r2", order)
	waitFor(t, "the second reader is queued too", func() bool { return clusterWaiters(t, ms[0], "s") == 2 })
	r1.Release()
	if first, second := <-order, <-order; first != "w" || second != "r2" {
		t.Fatalf("grant order %s, %s; want w, r2", first, second)
	}
}

// acquireThenRelease takes scan id in mode as owner name, says so on
// granted and releases.
func acquireThenRelease(t *testing.T, m *Manager, id string, mode Mode, name string, granted chan<- string) {
	l, err := m.Acquire(context.Background(), id, mode, testOwner(name))
	if err != nil {
		t.Error(err)
		granted <- name + " failed"
		return
	}
	granted <- name
	l.Release()
}

func TestEtcdCancelLeavesNoKey(t *testing.T) {
	ms, _ := etcdHosts(t, 2)
	l, err := ms[0].Acquire(context.Background(), "s", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := ms[1].Acquire(ctx, "s", Exclusive, testOwner("b"))
		done <- err
	}()
	waitFor(t, "b is queued", func() bool { return clusterWaiters(t, ms[0], "s") == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v, want context.Canceled", err)
	}
	waitFor(t, "b's key is gone", func() bool { return clusterWaiters(t, ms[0], "s") == 0 })
	l.Release()
	// Nothing of b's blocks a later request.
	if l, err = ms[0].TryAcquire("s", Exclusive, testOwner("a")); err != nil {
		t.Fatal(err)
	}
	l.Release()
}

func TestEtcdTimeoutBounded(t *testing.T) {
	ms, _ := etcdHosts(t, 2)
	l, err := ms[0].Acquire(context.Background(), "s", Shared, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := ms[1].Acquire(ctx, "s", Exclusive, testOwner("b")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("wait past the deadline: %v, want ErrTimeout", err)
	}
}

func TestEtcdUnreachableAtStart(t *testing.T) {
	testutil.RequireEtcd(t)
	ep := "http://127.0.0.1:1" // nothing listens on port 1
	_, err := New(t.TempDir(), WithEtcd(EtcdConfig{Client: testutil.EtcdClient(t, []string{ep}), StartTimeout: 500 * time.Millisecond}))
	if !errors.Is(err, ErrCluster) || !strings.Contains(err.Error(), ep) {
		t.Fatalf("New with etcd down: %v; want ErrCluster naming %s", err, ep)
	}
}

// A session revoked behind the holder's back (as when its lease expired
// while the process was stopped) makes its leases Lost, lets another
// host in, and keeps new readers of the lost hold waiting.
func TestEtcdLostSessionFencesLeases(t *testing.T) {
	ms, e := etcdHosts(t, 2)
	a, b := ms[0], ms[1]
	l, err := a.Acquire(context.Background(), "s", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Lost() {
		t.Fatal("a fresh lease is lost")
	}
	revokeAllLeases(t, e)
	lb, err := b.Acquire(context.Background(), "s", Exclusive, testOwner("b"))
	if err != nil {
		t.Fatalf("host b after host a's lease was revoked: %v", err)
	}
	defer lb.Release()
	waitFor(t, "host a notices its lease is gone", l.Lost)
	// Lost turns true just before the report is counted.
	waitFor(t, "the lost hold reported", func() bool { return a.Stats().LostLockFiles > 0 })
	if _, err := a.TryAcquire("s", Shared, testOwner("a2")); err == nil {
		t.Fatal("a new reader joined a lost hold")
	}
	l.Release()
	if _, err := a.TryAcquire("s", Shared, testOwner("a2")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("after the lost hold was released, host a sees %v; want ErrWouldBlock (b holds it)", err)
	}
}

// revokeAllLeases revokes every lease of the cluster, as when they
// expired while their processes were stopped.
func revokeAllLeases(t *testing.T, e *testutil.Etcd) {
	t.Helper()
	c := testutil.EtcdClient(t, e.Endpoints)
	leases, err := c.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ls := range leases.Leases {
		if _, err := c.Revoke(context.Background(), ls.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEtcdStatusShowsOtherHost(t *testing.T) {
	ms, _ := etcdHosts(t, 2)
	l, err := ms[0].Acquire(context.Background(), "s", Shared, Owner{User: "alice", Key: "k", PID: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	list, err := ms[1].List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || len(list[0].Holders) != 1 {
		t.Fatalf("host b lists %+v; want scan s with one holder", list)
	}
	h := list[0].Holders[0]
	if h.Where != WhereCluster || h.User != "alice" || h.PID != 1 || h.Mode != Shared || h.Hostname == "" || h.Since.IsZero() {
		t.Fatalf("holder seen from host b: %+v", h)
	}
}

// cleanup --etcd: a key no lease will ever remove (put by hand) is
// listed, then removed; a live holder's key is left alone.
func TestEtcdPurgeClusterStale(t *testing.T) {
	ms, e := etcdHosts(t, 1)
	m := ms[0]
	l, err := m.Acquire(context.Background(), "held", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	stale := DefaultEtcdPrefix + "scans/s/by-hand"
	if _, err := testutil.EtcdClient(t, e.Endpoints).Put(context.Background(), stale, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.TryAcquire("s", Shared, testOwner("b")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("a hand-made key should block the scan: %v", err)
	}
	for _, dry := range []bool{true, false} {
		keys, err := m.PurgeClusterStale(dry)
		if err != nil || len(keys) != 1 || keys[0] != stale {
			t.Fatalf("PurgeClusterStale(dry=%v) = %q, %v; want just %s", dry, keys, err, stale)
		}
	}
	if keys, err := m.PurgeClusterStale(true); err != nil || len(keys) != 0 {
		t.Fatalf("after the purge: %q, %v", keys, err)
	}
	lb, err := m.TryAcquire("s", Shared, testOwner("b"))
	if err != nil {
		t.Fatalf("scan s after the purge: %v", err)
	}
	lb.Release()
}

// Readers of a host that holds a scan shared stop joining that hold once
// a writer of another host waits, so that the writer is not starved.
func TestEtcdLocalReadersHoldBackForRemoteWriter(t *testing.T) {
	ms, _ := etcdHosts(t, 2)
	r1, err := ms[0].Acquire(context.Background(), "s", Shared, testOwner("r1"))
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 1)
	go acquireThenRelease(t, ms[1], "s", Exclusive, "w", order)
	waitFor(t, "the writer is queued", func() bool { return clusterWaiters(t, ms[0], "s") == 1 })
	// The first question starts a watch of the scan's keys; from its
	// answer on, new readers of host a hold back.
	waitFor(t, "host a's new readers hold back", func() bool {
		l, err := ms[0].TryAcquire("s", Shared, testOwner("r2"))
		if err == nil {
			l.Release()
			return false
		}
		if !errors.Is(err, ErrWouldBlock) {
			t.Fatal(err)
		}
		return true
	})
	r1.Release()
	if got := <-order; got != "w" {
		t.Fatal(got)
	}
}
