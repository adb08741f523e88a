package lockmgr

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"scanlockfs/internal/testutil"
)

// etcdKey is a key of a scan as etcd stores it.
type etcdKey struct {
	key      string
	rev, mod int64 // create and mod revisions
	holder   etcdHolder
}

// scanKeys returns the keys of scan id in etcd, oldest first, and the
// store's revision.
func scanKeys(t *testing.T, e *testutil.Etcd, id string) ([]etcdKey, int64) {
	t.Helper()
	g, err := testutil.EtcdClient(t, e.Endpoints).Get(context.Background(), DefaultEtcdPrefix+"scans/"+id+"/",
		clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	var out []etcdKey
	for _, kv := range g.Kvs {
		out = append(out, etcdKey{string(kv.Key), kv.CreateRevision, kv.ModRevision, decodeHolder(kv.Value)})
	}
	return out, g.Header.Revision
}

// takeAndRelease takes scan s exclusively on m as owner a and releases
// it: with KeepIdle, m keeps the key idle.
func takeAndRelease(t *testing.T, m *Manager) {
	t.Helper()
	l, err := m.Acquire(context.Background(), "s", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
}

// A scan taken again soon after its release rewrites the key it kept,
// in its place, with the new holder's mode and owner.
func TestEtcdReacquireRewritesIdleKey(t *testing.T) {
	ms, e := etcdHostsKeeping(t, 1, time.Hour)
	m := ms[0]
	l, err := m.Acquire(context.Background(), "s", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := scanKeys(t, e, "s")
	l.Release()
	if got, _ := scanKeys(t, e, "s"); len(got) != 1 || got[0].key != first[0].key {
		t.Fatalf("keys after the release: %+v; want the key kept idle", got)
	}
	if l, err = m.Acquire(context.Background(), "s", Shared, testOwner("b")); err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	got, _ := scanKeys(t, e, "s")
	if len(got) != 1 || got[0].key != first[0].key || got[0].rev != first[0].rev || got[0].mod == first[0].mod {
		t.Fatalf("keys after the second acquisition: %+v; want %s rewritten at revision %d", got, first[0].key, first[0].rev)
	}
	if h := got[0].holder; h.Mode != Shared || h.Owner != "b" {
		t.Fatalf("the rewritten key says %+v; want shared, owner b", h)
	}
	if n := m.cluster.stats.idleReuses.Load(); n != 1 {
		t.Fatalf("%d acquisitions reused an idle key; want 1", n)
	}
}

// The same owner taking the scan again in the same mode writes nothing:
// its idle key already says so, and keeps its time.
func TestEtcdReacquireBySameOwnerWritesNothing(t *testing.T) {
	ms, e := etcdHostsKeeping(t, 1, time.Hour)
	m := ms[0]
	for range 3 {
		takeAndRelease(t, m)
	}
	before, rev := scanKeys(t, e, "s")
	l, err := m.Acquire(context.Background(), "s", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	after, rev2 := scanKeys(t, e, "s")
	l.Release()
	if len(after) != 1 || after[0] != before[0] || rev2 != rev {
		t.Fatalf("key %+v at revision %d, then %+v at revision %d; want it unchanged, and no write", before, rev, after, rev2)
	}
	if n := m.cluster.stats.idleReuses.Load(); n != 3 {
		t.Fatalf("%d acquisitions reused the idle key; want 3", n)
	}
}

// Another host does not wait for a key kept idle: it goes as soon as
// that host queues (here KeepIdle is an hour).
func TestEtcdIdleKeyYieldsToOtherHost(t *testing.T) {
	ms, e := etcdHostsKeeping(t, 2, time.Hour)
	takeAndRelease(t, ms[0])
	if got, _ := scanKeys(t, e, "s"); len(got) != 1 {
		t.Fatalf("keys after the release: %+v; want host a's kept idle", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lb, err := ms[1].Acquire(ctx, "s", Exclusive, testOwner("b"))
	if err != nil {
		t.Fatalf("host b behind host a's idle key: %v", err)
	}
	defer lb.Release()
	if got, _ := scanKeys(t, e, "s"); len(got) != 1 || got[0].holder.Owner != "b" {
		t.Fatalf("keys while host b holds the scan: %+v", got)
	}
}

// A release after another host queued during the hold deletes the key
// at once instead of keeping it idle.
func TestEtcdReleaseWithWaiterDeletesKey(t *testing.T) {
	ms, e := etcdHostsKeeping(t, 2, time.Hour)
	a, b := ms[0], ms[1]
	l, err := a.Acquire(context.Background(), "s", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 1)
	go acquireThenRelease(t, b, "s", Exclusive, "b", order)
	waitFor(t, "host a saw host b queue", func() bool {
		a.cluster.mu.Lock()
		defer a.cluster.mu.Unlock()
		s := a.cluster.keyed["s"]
		return s != nil && s.newer > 0
	})
	l.Release()
	a.cluster.mu.Lock()
	idle := len(a.cluster.idle)
	a.cluster.mu.Unlock()
	if idle != 0 {
		t.Fatal("host a kept its key idle while host b waited for it")
	}
	keys, _ := scanKeys(t, e, "s")
	for _, k := range keys {
		if k.holder.Owner == "a" {
			t.Fatalf("host a's key is still there after its release: %+v", k)
		}
	}
	if got := <-order; got != "b" {
		t.Fatal(got)
	}
}

// A host that takes a scan again after another host queued behind its
// idle key queues behind that host (FIFO), even if its key is still
// there: the idle key's watch is disabled here, so that only enqueue's
// condition can keep the order.
func TestEtcdReacquireQueuesBehindNewcomer(t *testing.T) {
	ms, _ := etcdHostsKeeping(t, 2, time.Hour)
	a, b := ms[0], ms[1]
	ab := a.cluster
	ab.lingerIdle = func(k *idleKey) {
		defer ab.bgWG.Done()
		select {
		case <-k.claimed:
		case <-ab.bgCtx.Done():
		}
	}
	takeAndRelease(t, a)
	order := make(chan string, 2)
	go acquireThenRelease(t, b, "s", Exclusive, "b", order)
	waitFor(t, "host b is queued behind host a's idle key", func() bool { return clusterWaiters(t, a, "s") == 1 })
	go acquireThenRelease(t, a, "s", Exclusive, "a", order)
	if first, second := <-order, <-order; first != "b" || second != "a" {
		t.Fatalf("grant order %s, %s; want b, a", first, second)
	}
	if n := ab.stats.idleReuses.Load(); n != 0 {
		t.Fatalf("%d acquisitions reused the idle key; want 0", n)
	}
}

// A key kept idle under a session that ended is not reused: the next
// acquisition queues a new key under a new session, and holds the scan.
func TestEtcdIdleKeyOfLostSession(t *testing.T) {
	ms, e := etcdHostsKeeping(t, 2, time.Hour)
	a, b := ms[0], ms[1]
	takeAndRelease(t, a)
	revokeAllLeases(t, e)
	l, err := a.Acquire(context.Background(), "s", Exclusive, testOwner("a"))
	if err != nil {
		t.Fatalf("host a after its session was revoked: %v", err)
	}
	defer l.Release()
	if _, err := b.TryAcquire("s", Shared, testOwner("b")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("host b while host a holds the scan again: %v; want ErrWouldBlock", err)
	}
	if got, _ := scanKeys(t, e, "s"); len(got) != 1 {
		t.Fatalf("keys: %+v; want host a's new key only", got)
	}
}
