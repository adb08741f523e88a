package lockmgr

import "context"

// clusterBackend is the backend of a manager WithEtcd: every hold is the
// local flock (flock.go) and the scan's key in etcd (etcd_scan.go).
//
// Order: the local flock first, then the etcd key; released in the
// reverse order. Why this cannot deadlock: a process that holds, or
// queues for, a scan's etcd key already holds the scan's local flock,
// so on each host at most one process (in the exclusive case) or only
// readers (in the shared case) are in etcd's queue for the scan, and a
// holder of an etcd key waits for nothing more for that scan: every
// wait for the key is a wait for somebody who can go on. Local waiters
// (plantdb, flock(1), other managers) wait for the flock only, which its
// holder gives up without needing anything from them. Taking etcd
// first would let a process hold the cluster lock while it waits for a
// local plantdb holder, stalling every host for a local reason. A key
// kept idle after its release (etcd_idle.go) is held by nobody without
// the flock, but it waits for nothing either: it goes by itself within
// KeepIdle, sooner when somebody queues behind it.
type clusterBackend struct {
	local *flockBackend
	etcd  *etcdBackend
}

var _ backend = (*clusterBackend)(nil)

type clusterScan struct {
	local backendScan
	etcd  *etcdScan
}

var _ backendScan = (*clusterScan)(nil)

func (c *clusterBackend) open(id string) backendScan {
	return &clusterScan{local: c.local.open(id), etcd: c.etcd.open(id)}
}

func (c *clusterBackend) shutdown() {
	c.etcd.shutdown()
	c.local.shutdown()
}

func (c *clusterBackend) close() {
	c.local.close()
	c.etcd.close()
}

// lock implements backendScan: the flock, then the etcd key. If the key
// is not granted, the flock is dropped too: the two are always held
// together, in the same mode.
func (h *clusterScan) lock(ctx context.Context, req holdRequest) (Mode, error) {
	got, err := h.local.lock(ctx, req)
	if err != nil {
		if got == 0 && req.from != 0 {
			h.etcd.release()
		}
		return got, err
	}
	if _, err := h.etcd.lock(ctx, holdRequest{from: req.from, to: req.to, owner: req.owner, try: req.try}); err != nil {
		h.local.unlock()
		return 0, err
	}
	return req.to, nil
}

// unlock implements backendScan: the etcd key first (deleted, or kept
// idle for a while: etcd_idle.go), then the flock.
func (h *clusterScan) unlock() {
	h.etcd.unlock()
	h.local.unlock()
}

func (h *clusterScan) writerWaiting() bool {
	return h.local.writerWaiting() || h.etcd.writerWaiting()
}

// waiting implements backendScan: the local waiting record; waiters in
// etcd are visible as their keys already.
func (h *clusterScan) waiting(mode Mode, delta int) { h.local.waiting(mode, delta) }

func (h *clusterScan) done() {
	h.etcd.stopWatch()
	h.local.done()
}

// holdLost implements holdFencer.
func (h *clusterScan) holdLost() bool { return h.etcd.lost() }

// holdFencer is implemented by the handles of backends whose holds can be
// lost while they are held (a lease that expired).
type holdFencer interface{ holdLost() bool }

// Lost reports whether the hold this lease was granted under is gone or
// no longer guaranteed (the etcd session of this process ended, or was
// not renewed within its TTL): another host may hold the scan now, so
// whatever the lease protects must not be written any more. Always false
// without WithEtcd. It costs an atomic load and a clock read.
func (l *Lease) Lost() bool {
	f, ok := l.s.hold.(holdFencer)
	return ok && f.holdLost()
}

// startCluster creates the etcd backend and checks that the cluster
// answers (an error wrapping ErrCluster names the endpoints).
func (m *Manager) startCluster(host string) (*etcdBackend, error) {
	if m.cfg.etcd.Client == nil {
		return nil, ErrCluster
	}
	b := newEtcdBackend(m.cfg.etcd, m.log, m.pid, host, m.holdLost)
	if err := b.connect(); err != nil {
		b.shutdown()
		b.close()
		return nil, err
	}
	return b, nil
}
