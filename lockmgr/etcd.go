package lockmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The etcd backend: a scan is held across hosts by a key in etcd, under
// a lease that this process keeps alive; see "Several hosts" in the
// package documentation for the protocol and etcd_scan.go for the queue.

// DefaultEtcdPrefix, DefaultEtcdTTL and DefaultEtcdKeepIdle are WithEtcd's
// defaults.
const (
	DefaultEtcdPrefix   = "/scanlockfs/"
	DefaultEtcdTTL      = 10 * time.Second
	DefaultEtcdKeepIdle = 10 * time.Millisecond
)

// Sentinel errors of the cluster backend.
var (
	// ErrCluster: the etcd cluster could not be reached or refused a
	// request (the message names the endpoints).
	ErrCluster = errors.New("cluster lock service unavailable")
	// ErrHoldLost: this process lost its etcd session (lease) while it
	// held or waited for the scan; another host may hold it now.
	ErrHoldLost = errors.New("cluster scan lock lost")
)

// EtcdConfig configures the etcd backend (WithEtcd).
type EtcdConfig struct {
	// Client is connected to the cluster; the manager does not close it.
	Client *clientv3.Client
	// Prefix is put in front of every key (default DefaultEtcdPrefix), so
	// that several scan trees can share a cluster. It should end in '/'.
	Prefix string
	// TTL is the lease of this process's session (default DefaultEtcdTTL,
	// at least one second): locks of a host that dies are free after it.
	TTL time.Duration
	// StartTimeout bounds New's first contact with the cluster (default
	// 5 s).
	StartTimeout time.Duration
	// KeepIdle is how long the key of a released scan is kept for this
	// process's next acquisition of the scan, which then costs one etcd
	// write (none if the key already names the holder) instead of two
	// (default DefaultEtcdKeepIdle; negative: the key is deleted at once).
	// A key kept idle goes as soon as another process queues for the scan
	// (etcd_idle.go).
	KeepIdle time.Duration
}

// WithEtcd makes every lock also a cluster-wide lock in etcd, taken
// together with the local flock (see "Several hosts" in the package
// documentation). Without it, locks are local flocks only.
func WithEtcd(ec EtcdConfig) Option {
	return func(c *config) { e := ec; c.etcd = &e }
}

// etcdBackend holds scans in etcd for this process. It owns the session
// (the lease and its renewal) and knows which scans are held under it,
// so that it can report them lost when the session ends.
type etcdBackend struct {
	cli      *clientv3.Client
	prefix   string // PREFIX + "scans/"
	ttl      time.Duration
	start    time.Duration // StartTimeout
	log      logrus.FieldLogger
	lost     lostFunc
	holder   etcdHolder // what this process's keys say about it
	base     time.Time  // monotonic reference of the sessions' expiry times
	closeCh  chan struct{}
	closed   atomic.Bool
	stats    clusterCounters
	creating chan struct{} // a token: one goroutine at a time creates a session
	keepIdle time.Duration // EtcdConfig.KeepIdle; 0: off
	// lingerIdle keeps an idle key until it is claimed or deleted
	// (etcd_idle.go; tests replace it).
	lingerIdle func(*idleKey)

	mu    sync.Mutex // guards sess, held, keyed and idle
	sess  *etcdSession
	held  map[*etcdScan]struct{} // scans with a key (held or queued)
	keyed map[string]*etcdScan   // the same, by scan id
	idle  map[string]*idleKey    // released scans whose key is kept, by scan id
	bgWG  sync.WaitGroup
	bgCtx context.Context
	bgEnd context.CancelFunc
}

func newEtcdBackend(ec *EtcdConfig, log logrus.FieldLogger, pid int, host string, lost lostFunc) *etcdBackend {
	prefix := ec.Prefix
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	ttl := max(ec.TTL, time.Second)
	if ec.TTL == 0 {
		ttl = DefaultEtcdTTL
	}
	start := ec.StartTimeout
	if start <= 0 {
		start = 5 * time.Second
	}
	keep := ec.KeepIdle
	if keep == 0 {
		keep = DefaultEtcdKeepIdle
	}
	cmd, _ := os.Executable()
	b := &etcdBackend{cli: ec.Client, prefix: prefix + "scans/", ttl: ttl, start: start, log: log, lost: lost,
		holder: etcdHolder{Hostname: host, PID: pid, Command: cmdName(cmd)},
		base:   time.Now(), closeCh: make(chan struct{}), creating: make(chan struct{}, 1),
		keepIdle: max(keep, 0), held: make(map[*etcdScan]struct{}), keyed: make(map[string]*etcdScan), idle: make(map[string]*idleKey)}
	b.lingerIdle = b.linger
	b.bgCtx, b.bgEnd = context.WithCancel(context.Background())
	return b
}

func cmdName(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[i+1:]
	}
	return path
}

// endpoints names the cluster in error messages.
func (b *etcdBackend) endpoints() string { return strings.Join(b.cli.Endpoints(), ",") }

// clusterError wraps an error of etcd with ErrCluster and the endpoints.
func (b *etcdBackend) clusterError(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: etcd at %s: %w", what, b.endpoints(), err)
	}
	return fmt.Errorf("%w: %s: etcd at %s: %w", ErrCluster, what, b.endpoints(), err)
}

// connect is New's check that the cluster answers: it creates the first
// session, bounded by StartTimeout.
func (b *etcdBackend) connect() error {
	ctx, cancel := context.WithTimeout(context.Background(), b.start)
	defer cancel()
	if _, err := b.session(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: no answer from etcd at %s within %v (is etcd running there? check --etcd and the TLS options)",
				ErrCluster, b.endpoints(), b.start)
		}
		return err
	}
	if b.keepIdle > 0 {
		b.bgWG.Add(1)
		go b.watchQueues()
	}
	return nil
}

// open implements backend.
func (b *etcdBackend) open(id string) *etcdScan {
	return &etcdScan{b: b, id: id, dir: b.prefix + id + "/"}
}

// shutdown ends every wait with ErrClosed and stops the renewals; the
// session's lease is revoked by close, after the holds were dropped.
func (b *etcdBackend) shutdown() {
	if b.closed.CompareAndSwap(false, true) {
		close(b.closeCh)
	}
}

// close revokes the session, which removes every key left, and waits for
// the background work.
func (b *etcdBackend) close() {
	b.mu.Lock()
	s := b.sess
	b.sess = nil
	b.mu.Unlock()
	if s != nil {
		s.end("the lock manager was closed")
		ctx, cancel := context.WithTimeout(context.Background(), b.ttl)
		_, _ = b.cli.Revoke(ctx, s.id)
		cancel()
	}
	b.bgEnd()
	b.bgWG.Wait()
}

// register and unregister track the scans that have a key in etcd.
func (b *etcdBackend) register(s *etcdScan) {
	b.mu.Lock()
	b.held[s] = struct{}{}
	b.keyed[s.id] = s
	b.mu.Unlock()
}

func (b *etcdBackend) unregister(s *etcdScan) {
	b.mu.Lock()
	b.unregisterLocked(s)
	b.mu.Unlock()
}

func (b *etcdBackend) unregisterLocked(s *etcdScan) {
	delete(b.held, s)
	if b.keyed[s.id] == s {
		delete(b.keyed, s.id)
	}
}

// sessionLost marks every scan held under sess lost and reports it.
func (b *etcdBackend) sessionLost(sess *etcdSession, why string) {
	b.stats.sessionsLost.Add(1)
	b.mu.Lock()
	if b.sess == sess {
		b.sess = nil
	}
	var lost []*etcdScan
	for s := range b.held {
		if s.sess.Load() == sess {
			lost = append(lost, s)
		}
	}
	b.mu.Unlock()
	b.log.WithField("lease", fmt.Sprintf("%x", int64(sess.id))).Warn("etcd session lost: " + why)
	for _, s := range lost {
		if m := Mode(s.mode.Load()); m != 0 && s.lostHold.CompareAndSwap(false, true) {
			b.lost(s.id, m, "the etcd session (lease) of this process ended while it held the scan ("+why+
				"); another host may hold it now: reads and writes through handles opened under it fail")
		}
	}
	// The lease may still exist on the server (a renewal that came too
	// late): revoke it so that the keys go at once.
	b.bgWG.Add(1)
	go func() {
		defer b.bgWG.Done()
		ctx, cancel := context.WithTimeout(b.bgCtx, b.ttl)
		_, _ = b.cli.Revoke(ctx, sess.id)
		cancel()
	}()
}

// now is the time on the backend's monotonic clock.
func (b *etcdBackend) now() int64 { return int64(time.Since(b.base)) }

// clusterCounters are the cluster backend's statistics (ClusterStats).
type clusterCounters struct {
	sessions, sessionsLost  atomic.Uint64
	renewals, renewalErrors atomic.Uint64
	acquires, acquireNanos  atomic.Uint64
	waits, releaseRetries   atomic.Uint64
	idleReuses              atomic.Uint64 // acquisitions that took back a key kept idle
}

// ClusterStats are the etcd backend's counters, for metrics.
type ClusterStats struct {
	// Enabled: the manager uses etcd (WithEtcd).
	Enabled bool
	// SessionUp: this process has a live session now.
	SessionUp bool
	// Sessions counts sessions created, SessionsLost those that ended
	// while the manager was open (lease expired or not renewable).
	Sessions, SessionsLost uint64
	// Renewals counts successful lease renewals, RenewalErrors failed
	// attempts.
	Renewals, RenewalErrors uint64
	// Acquires counts cluster holds taken and AcquireTime their total
	// time (including waits for other hosts); Waits counts those that had
	// to wait for another host.
	Acquires    uint64
	AcquireTime time.Duration
	Waits       uint64
	// ReleaseRetries counts releases whose key deletion had to be retried.
	ReleaseRetries uint64
}

// ClusterStats returns the etcd backend's counters (zero without WithEtcd).
func (m *Manager) ClusterStats() ClusterStats {
	b := m.cluster
	if b == nil {
		return ClusterStats{}
	}
	b.mu.Lock()
	up := b.sess != nil && !b.sess.expired(b.now())
	b.mu.Unlock()
	c := &b.stats
	return ClusterStats{Enabled: true, SessionUp: up, Sessions: c.sessions.Load(), SessionsLost: c.sessionsLost.Load(),
		Renewals: c.renewals.Load(), RenewalErrors: c.renewalErrors.Load(), Acquires: c.acquires.Load(),
		AcquireTime: time.Duration(c.acquireNanos.Load()), Waits: c.waits.Load(), ReleaseRetries: c.releaseRetries.Load()}
}
