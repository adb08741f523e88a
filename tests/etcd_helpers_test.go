package tests

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
)

// etcdTTL is the session lease of the mounts in these tests: short, so
// that the fault tests (which wait for a lease to expire) stay quick.
const etcdTTL = 2 * time.Second

// etcdFlags are the cluster flags of a "host": its own lock directory
// (so that only etcd excludes it from the other hosts) and the cluster.
func etcdFlags(t *testing.T, e *testutil.Etcd) []string {
	return []string{"--lock-dir", filepath.Join(t.TempDir(), "locks"),
		"--etcd", strings.Join(e.Endpoints, ","), "--etcd-ttl", etcdTTL.String()}
}

// etcdHost mounts src as one host of the cluster.
func etcdHost(t *testing.T, e *testutil.Etcd, src string, flags ...string) *daemon {
	t.Helper()
	return mountT(t, src, append(etcdFlags(t, e), flags...)...)
}

// hosts is a fresh SOURCE with scan scanA mounted as two hosts A and B
// of a one-member cluster, with a view of the cluster.
type hosts struct {
	etcd *testutil.Etcd
	src  string
	a, b *daemon
	view *lockmgr.Manager
}

// twoHosts starts hosts with flags (host A gets flagsA too).
func twoHosts(t *testing.T, flagsA []string, flags ...string) hosts {
	t.Helper()
	t.Parallel()
	h := hosts{etcd: testutil.StartEtcd(t, 1), src: scanDB(t, "scanA")}
	h.a, h.b = etcdHost(t, h.etcd, h.src, append(flagsA, flags...)...), etcdHost(t, h.etcd, h.src, flags...)
	h.view = clusterView(t, h.etcd, h.src)
	return h
}

// clusterView is a read-only lock manager of the test that sees every
// host's keys in etcd (its own lock directory is empty).
func clusterView(t *testing.T, e *testutil.Etcd, src string) *lockmgr.Manager {
	t.Helper()
	m, err := lockmgr.New(src, lockmgr.WithReadOnly(true), lockmgr.WithLockDir(t.TempDir()),
		lockmgr.WithEtcd(lockmgr.EtcdConfig{Client: testutil.EtcdClient(t, e.Endpoints)}))
	must(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// clusterState returns who holds and waits for scan in etcd, from the
// test's own view.
func clusterState(t *testing.T, m *lockmgr.Manager, scan string) (holders, waiters int) {
	t.Helper()
	st, err := m.Status(scan)
	must(t, err)
	if st.ClusterError != "" {
		t.Fatal(st.ClusterError)
	}
	return len(st.Holders), len(st.Waiters)
}

// waitCluster polls the cluster view until cond holds (the view only
// observes; the test never relies on time passing).
func waitCluster(t *testing.T, m *lockmgr.Manager, scan, what string, cond func(holders, waiters int) bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		h, w := clusterState(t, m, scan)
		if cond(h, w) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("scan %s: %s did not happen in %v (holders %d, waiters %d)", scan, what, waitLimit, h, w)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// withTimeout is a context for one step of a test.
func withTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}
