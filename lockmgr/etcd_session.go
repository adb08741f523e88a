package lockmgr

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdSession is one lease of this process and its renewal. Its keys are
// valid until validUntil, a lower bound of the lease's expiry on the
// server: the start of the last renewal that succeeded plus the TTL the
// server granted. The server never expires a lease earlier, so while the
// local clock is before validUntil no other host can have taken a key of
// ours over; after it, holds under the session count as lost even if
// the renewal loop has not noticed yet (a process stopped longer than
// the TTL checks the time before it serves a read or write).
type etcdSession struct {
	id         clientv3.LeaseID
	validUntil atomic.Int64 // on the backend's monotonic clock
	done       chan struct{}
	once       sync.Once
}

func (s *etcdSession) expired(now int64) bool {
	select {
	case <-s.done:
		return true
	default:
	}
	return now >= s.validUntil.Load()
}

func (s *etcdSession) end(string) { s.once.Do(func() { close(s.done) }) }

// session returns the live session, creating one if there is none. One
// goroutine at a time creates; the others wait for it (or ctx).
func (b *etcdBackend) session(ctx context.Context) (*etcdSession, error) {
	for {
		b.mu.Lock()
		s := b.sess
		b.mu.Unlock()
		if s != nil && !s.expired(b.now()) {
			return s, nil
		}
		if s != nil {
			b.expire(s, "its lease was not renewed within the TTL")
		}
		select {
		case b.creating <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.closeCh:
			return nil, ErrClosed
		}
		b.mu.Lock()
		s = b.sess
		b.mu.Unlock()
		if s != nil && !s.expired(b.now()) {
			<-b.creating
			return s, nil
		}
		s, err := b.grant(ctx)
		<-b.creating
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// grant creates a session and starts its renewal.
func (b *etcdBackend) grant(ctx context.Context) (*etcdSession, error) {
	t0 := b.now()
	resp, err := b.cli.Grant(ctx, int64(b.ttl/time.Second))
	if err != nil {
		return nil, b.clusterError("creating a lease", err)
	}
	s := &etcdSession{id: resp.ID, done: make(chan struct{})}
	s.validUntil.Store(t0 + resp.TTL*int64(time.Second))
	b.stats.sessions.Add(1)
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		_, _ = b.cli.Revoke(context.Background(), resp.ID)
		return nil, ErrClosed
	}
	b.sess = s
	b.mu.Unlock()
	b.bgWG.Add(1)
	go b.renew(s)
	return s, nil
}

// expire ends s, if it has not ended yet, and reports its holds lost.
func (b *etcdBackend) expire(s *etcdSession, why string) {
	first := false
	s.once.Do(func() { close(s.done); first = true })
	if first && !b.closed.Load() {
		b.sessionLost(s, why)
	}
}

// renew keeps the lease of s alive: a renewal every third of the TTL,
// retried quickly while it fails, until validUntil passes or the server
// says the lease is gone.
func (b *etcdBackend) renew(s *etcdSession) {
	defer b.bgWG.Done()
	interval := b.ttl / 3
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-b.bgCtx.Done():
			return
		case <-t.C:
		}
		now := b.now()
		if s.expired(now) {
			b.expire(s, "its lease was not renewed within the TTL (was this process stopped, or etcd unreachable?)")
			return
		}
		ctx, cancel := context.WithTimeout(b.bgCtx, time.Duration(s.validUntil.Load()-now))
		resp, err := b.cli.KeepAliveOnce(ctx, s.id)
		cancel()
		switch {
		case err == nil && resp.TTL > 0:
			s.validUntil.Store(now + resp.TTL*int64(time.Second))
			b.stats.renewals.Add(1)
			t.Reset(interval)
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			b.expire(s, "etcd says its lease expired (was this process stopped, or cut off, longer than the TTL?)")
			return
		default:
			if b.bgCtx.Err() != nil {
				return
			}
			b.stats.renewalErrors.Add(1)
			b.log.WithError(err).Debug("renewing the etcd lease failed; retrying")
			t.Reset(min(interval, 200*time.Millisecond))
		}
	}
}
