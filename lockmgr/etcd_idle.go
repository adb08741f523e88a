package lockmgr

import (
	"context"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Idle keys. Every etcd write waits for the leader's WAL fsync, so an
// acquisition (one put) followed by a release (one delete) costs two of
// them. Instead, a process that drops a scan nobody queued for keeps its
// key for EtcdConfig.KeepIdle: its next acquisition of the scan within
// that time takes the key back in place (one write, none if the key
// already names the new holder; the release cost none); otherwise the
// key is deleted when the time is up, or as soon as another process
// puts a key for the scan, so that nobody waits for a key
// nobody uses for longer than it takes to notice. To notice without a
// request per release, the backend watches every put under the prefix
// (watchQueues) for as long as it runs.
//
// Order is kept: the rewrite is conditional, in the same transaction, on
// the key being the very version we left (not expired, not deleted) and
// on no key of the scan being newer than it. With nobody behind it, the
// key's place is the end of the queue, as a new key's would be; when
// somebody queued behind it meanwhile, enqueue deletes it and puts a new
// key behind theirs. The watch only makes waiting shorter: events it
// misses (while it restarts) keep an idle key for KeepIdle at most.
//
// An idle key waits for nothing and goes by itself, so it adds no wait
// to the deadlock argument of etcd_hold.go; no Lease is granted under
// it, so a session lost meanwhile fences nothing (the key goes with the
// session's etcd lease).

// maxIdleKeys bounds the keys kept idle at once (each has a goroutine
// and a timer).
const maxIdleKeys = 128

// idleKey is a released scan's key kept for reuse.
type idleKey struct {
	id, dir, key string
	sess         *etcdSession
	rev          int64         // its create revision: its place in the queue
	putRev       int64         // the revision of our last put of it
	holder       etcdHolder    // what it says
	claimed      chan struct{} // closed when an acquisition takes it over
	newcomer     chan struct{} // signalled when another key of the scan is put
}

// keepIdleKey keeps the key of the hold s is dropping idle, if KeepIdle
// allows it, the hold's session is live and nobody was seen queueing
// behind it; it reports whether it did (the caller then forgets the key
// without deleting it).
func (b *etcdBackend) keepIdleKey(s *etcdScan) bool {
	sess := s.sess.Load()
	if b.keepIdle <= 0 || b.closed.Load() || s.key == "" || s.putRev == 0 || sess == nil ||
		s.lostHold.Load() || sess.expired(b.now()) {
		return false
	}
	k := &idleKey{id: s.id, dir: s.dir, key: s.key, sess: sess, rev: s.rev, putRev: s.putRev, holder: s.holder,
		claimed: make(chan struct{}), newcomer: make(chan struct{}, 1)}
	b.mu.Lock()
	ok := b.sess == sess && s.newer <= s.rev && b.idle[s.id] == nil && len(b.idle) < maxIdleKeys
	if ok {
		// From now on watchQueues reports puts to k, not to s.
		b.unregisterLocked(s)
		b.idle[s.id] = k
		b.bgWG.Add(1) // b.sess is only cleared, under b.mu, before close waits
	}
	b.mu.Unlock()
	if ok {
		go b.lingerIdle(k)
	}
	return ok
}

// claimIdle takes over the idle key of scan id, if it is key under the
// live session sess, and ends its linger; nil if there is none.
func (b *etcdBackend) claimIdle(id, key string, sess *etcdSession) *idleKey {
	b.mu.Lock()
	k := b.idle[id]
	delete(b.idle, id)
	b.mu.Unlock()
	if k == nil {
		return nil
	}
	close(k.claimed)
	if k.sess != sess || k.key != key {
		return nil // of an ended session: it went with its lease
	}
	return k
}

// dropIdle takes k out of the idle keys unless an acquisition claimed it
// first; it reports whether k was still idle (the caller deletes it).
func (b *etcdBackend) dropIdle(k *idleKey) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.idle[k.id] != k {
		return false
	}
	delete(b.idle, k.id)
	return true
}

// queueCmp is the condition of enqueue's put. With k (a key we kept
// idle): it is still the version we put, and no key of the scan is newer,
// so taking it back in place keeps the order. Without: the key does not exist, so
// the put creates it at the end of the queue (an older version left by a
// deletion still under way must not keep its place).
func (k *idleKey) queueCmp(key, dir string) []clientv3.Cmp {
	if k == nil {
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", k.putRev),
		clientv3.Compare(clientv3.CreateRevision(dir), "<", k.rev+1).WithPrefix()}
}

// linger keeps k until KeepIdle has passed, another process puts a key
// for the scan or the manager shuts down, then deletes it; unless an
// acquisition claims k first, or its session ends (its lease removes it).
func (b *etcdBackend) linger(k *idleKey) {
	defer b.bgWG.Done()
	t := time.NewTimer(b.keepIdle)
	defer t.Stop()
	select {
	case <-k.claimed:
		return
	case <-k.sess.done:
		b.dropIdle(k)
		return
	case <-k.newcomer:
	case <-t.C:
	case <-b.closeCh:
	}
	if b.dropIdle(k) {
		b.removeKey(k.id, k.key, k.putRev, k.sess)
	}
}

// watchQueues follows every put under the prefix while the backend runs
// (see "Idle keys" above), restarting from the current revision after a
// failure.
func (b *etcdBackend) watchQueues() {
	defer b.bgWG.Done()
	var pause backoff
	for {
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(b.bgCtx))
		var err error
		for wr := range b.cli.Watch(ctx, b.prefix, clientv3.WithPrefix(), clientv3.WithFilterDelete()) {
			if err = wr.Err(); err != nil {
				break
			}
			b.sawPuts(wr.Events)
			pause = backoff{}
		}
		cancel()
		if b.bgCtx.Err() != nil {
			return
		}
		b.log.WithError(err).Debug("watching the etcd lock keys failed; watching again")
		if pause.wait(b.bgCtx, b.closeCh, err) != nil {
			return
		}
	}
}

// sawPuts tells the scans whose keys are held, queued or idle here that
// another process put a key newer than theirs.
func (b *etcdBackend) sawPuts(events []*clientv3.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range events {
		kv := ev.Kv
		id, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), b.prefix), "/")
		if ev.Type != mvccpb.PUT || !ok {
			continue
		}
		if s := b.keyed[id]; s != nil && !s.ownKey(kv) {
			s.newer = max(s.newer, kv.CreateRevision)
		}
		if k := b.idle[id]; k != nil && string(kv.Key) != k.key && kv.CreateRevision > k.rev {
			select {
			case k.newcomer <- struct{}{}:
			default:
			}
		}
	}
}

// ownKey reports whether kv is a key of this process for the scan (put
// under the session s queues or holds under).
func (s *etcdScan) ownKey(kv *mvccpb.KeyValue) bool {
	sess := s.sess.Load()
	return sess != nil && kv.Lease == int64(sess.id)
}
