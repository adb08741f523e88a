package lockmgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	etcdpb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// etcdHolder is the value of a key: who holds or waits for the scan.
type etcdHolder struct {
	Mode     Mode      `json:"mode"`
	Hostname string    `json:"hostname"`
	PID      int       `json:"pid"`
	Command  string    `json:"command,omitempty"`
	User     string    `json:"user,omitempty"`
	Owner    string    `json:"owner,omitempty"`
	Since    time.Time `json:"since"`
}

// sameAs reports whether h says what o says, but for the time.
func (h etcdHolder) sameAs(o etcdHolder) bool {
	o.Since = h.Since
	return h == o
}

// etcdScan is the etcd backend's state of one scan in this process: at
// most one key, PREFIX/scans/S/LEASE (LEASE in hexadecimal), whose value
// is an etcdHolder. Keys are served in the order of their create
// revision, as in etcd's read-write lock recipe: a reader holds the scan
// once no writer's key is older than its own, a writer once no key at
// all is. key, rev and the hold are only touched by the busy goroutine
// (see backendScan); sess, mode and lostHold are read by others.
type etcdScan struct {
	b   *etcdBackend
	id  string
	dir string // PREFIX/scans/S/

	key    string     // our key, "" if none
	rev    int64      // its create revision
	putRev int64      // the revision of our put: release deletes only that version
	holder etcdHolder // what the key says

	sess     atomic.Pointer[etcdSession] // the session the key is under
	mode     atomic.Int32                // Mode held (0 while queued or free)
	lostHold atomic.Bool                 // the session ended while held
	// newer is the create revision of the newest key of another
	// process seen put for the scan while we have ours (watchQueues;
	// guarded by b.mu): above rev, somebody queued behind us.
	newer int64

	watchMu     sync.Mutex // guards watchCancel and heldKey
	watchCancel context.CancelFunc
	heldKey     string      // key while the scan is held: what writerWaiting watches around
	foreignW    atomic.Bool // a writer of another process has a key
}

// lock takes the scan in req.to, starting from req.from. An upgrade is
// not atomic: the shared key is given up and an exclusive one queued at
// the end (two hosts upgrading at once would otherwise wait for each
// other's shared key for ever). On failure nothing is held.
func (s *etcdScan) lock(ctx context.Context, req holdRequest) (Mode, error) {
	b := s.b
	start := time.Now()
	if req.from != 0 {
		s.release()
	}
	sess, kvs, rev, err := s.enqueue(ctx, req)
	if err != nil {
		return 0, err
	}
	waited := false
	for {
		ours, blocked := s.blocked(kvs, req.to)
		if ours == nil {
			s.release()
			return 0, fmt.Errorf("%w: scan %s: the key %s vanished while queued (session lost)", ErrHoldLost, s.id, s.key)
		}
		s.rev = ours.CreateRevision
		if !blocked {
			break
		}
		if req.try {
			s.release()
			return 0, fmt.Errorf("%w: scan %s is locked on another host", ErrWouldBlock, s.id)
		}
		waited = true
		if kvs, rev, err = s.waitChange(ctx, sess, rev); err != nil {
			s.release()
			return 0, err
		}
	}
	s.mode.Store(int32(req.to))
	s.watchMu.Lock()
	s.heldKey = s.key
	s.watchMu.Unlock()
	b.stats.acquires.Add(1)
	b.stats.acquireNanos.Add(uint64(time.Since(start)))
	if waited {
		b.stats.waits.Add(1)
	}
	return req.to, nil
}

// enqueue puts our key for req in etcd under the live session and reads
// the scan's queue (its keys in create-revision order, and the revision
// read), in one transaction. A key this process kept idle (etcd_idle.go)
// is taken over in place if nobody queued behind it since; otherwise the
// put must create the key, at the end of the queue. A session whose
// lease etcd no longer knows (it expired while we were idle) is replaced
// once.
func (s *etcdScan) enqueue(ctx context.Context, req holdRequest) (*etcdSession, []*mvccpb.KeyValue, int64, error) {
	b := s.b
	val := b.holder
	val.Mode, val.User, val.Owner, val.Since = req.to, req.owner.User, req.owner.Key, time.Now()
	if req.owner.PID != 0 {
		val.PID, val.Command = req.owner.PID, procComm(req.owner.PID)
	}
	var pause backoff
	for attempt := 0; ; attempt++ {
		sess, err := b.session(ctx)
		if err != nil {
			return nil, nil, 0, err
		}
		s.key = s.dir + strconv.FormatInt(int64(sess.id), 16)
		s.sess.Store(sess)
		b.register(s)
		idle := b.claimIdle(s.id, s.key, sess)
		resp, queue, err := s.queueTxn(ctx, sess, idle, val)
		if err == nil && resp.Succeeded {
			return sess, queue.Kvs, resp.Header.Revision, nil
		}
		if err == nil {
			// Our key is still there: kept idle while somebody queued
			// behind it, or its deletion is not done yet. Delete that
			// version and queue afresh.
			if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
				err = b.deleteKey(ctx, s.key, kvs[0].ModRevision)
			}
			if err == nil {
				continue
			}
		}
		s.release()
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt == 0:
			b.expire(sess, "etcd says its lease expired")
			continue
		case transient(err):
			if werr := pause.wait(ctx, b.closeCh, err); werr != nil {
				return nil, nil, 0, werr
			}
			continue
		}
		return nil, nil, 0, b.clusterError("queueing for scan "+s.id, err)
	}
}

// queueTxn is enqueue's transaction: if queueCmp holds, it puts val in
// our key and reads the queue; otherwise it reads our key. An idle key
// that already says val (but for its time) is not written at all: the
// transaction is then a read, which etcd serves without a raft write, and
// the key keeps its time (this process held the scan, or kept it idle,
// ever since). It returns the queue read, if it was.
func (s *etcdScan) queueTxn(ctx context.Context, sess *etcdSession, idle *idleKey, val etcdHolder) (*clientv3.TxnResponse, *etcdpb.RangeResponse, error) {
	b := s.b
	same := idle != nil && idle.holder.sameAs(val)
	if same {
		val.Since = idle.holder.Since
	}
	ops := []clientv3.Op{clientv3.OpGet(s.dir, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))}
	if !same {
		data, _ := json.Marshal(val)
		ops = append([]clientv3.Op{clientv3.OpPut(s.key, string(data), clientv3.WithLease(sess.id))}, ops...)
	}
	resp, err := b.cli.Txn(ctx).If(idle.queueCmp(s.key, s.dir)...).Then(ops...).Else(clientv3.OpGet(s.key)).Commit()
	if err != nil || !resp.Succeeded {
		return resp, nil, err
	}
	s.holder, s.putRev = val, resp.Header.Revision
	if same {
		s.putRev = idle.putRev
	}
	if idle != nil {
		b.stats.idleReuses.Add(1)
	}
	return resp, resp.Responses[len(ops)-1].GetResponseRange(), nil
}

// transient reports whether an error of etcd may go away by itself (a
// member down, an election, a timeout): the request is then retried until
// its context ends. Refusals (authentication, permissions, a bad request)
// are not retried.
func transient(err error) bool {
	for _, e := range []error{rpctypes.ErrPermissionDenied, rpctypes.ErrAuthFailed, rpctypes.ErrInvalidAuthToken,
		rpctypes.ErrUserEmpty, rpctypes.ErrAuthNotEnabled, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return false
		}
	}
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
		return false
	}
	return true
}

// backoff paces the retries of one request: 20 ms doubling up to 500 ms.
type backoff struct{ d time.Duration }

// wait sleeps before the next retry; it returns the end of ctx (naming
// the etcd error that made us retry) or ErrClosed instead.
func (p *backoff) wait(ctx context.Context, closeCh <-chan struct{}, cause error) error {
	p.d = min(max(2*p.d, 20*time.Millisecond), 500*time.Millisecond)
	t := time.NewTimer(p.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w (etcd kept failing: %v)", ctx.Err(), cause)
	case <-closeCh:
		return ErrClosed
	case <-t.C:
		return nil
	}
}

// blocked finds our key in kvs (sorted by create revision) and says
// whether an older key keeps us waiting: any for a writer, a writer's
// for a reader.
func (s *etcdScan) blocked(kvs []*mvccpb.KeyValue, to Mode) (ours *mvccpb.KeyValue, blocked bool) {
	for _, kv := range kvs {
		if string(kv.Key) == s.key {
			return kv, blocked
		}
		if to == Exclusive || keyMode(kv) != Shared {
			blocked = true
		}
	}
	return nil, blocked
}

// keyMode is the mode a key asks for; an unreadable value counts as a
// writer (it blocks everybody, as the safe choice).
func keyMode(kv *mvccpb.KeyValue) Mode {
	var h etcdHolder
	if json.Unmarshal(kv.Value, &h) != nil || h.Mode == 0 {
		return Exclusive
	}
	return h.Mode
}

// waitChange waits until a key of the scan is deleted after revision
// rev (a holder or waiter ahead of us went), or the watch fails, then
// returns the scan's keys and the revision they were read at.
func (s *etcdScan) waitChange(ctx context.Context, sess *etcdSession, rev int64) ([]*mvccpb.KeyValue, int64, error) {
	b := s.b
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := b.cli.Watch(wctx, s.dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterPut())
	var pause backoff
	for {
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-b.closeCh:
			return nil, 0, ErrClosed
		case <-sess.done:
			return nil, 0, fmt.Errorf("%w: scan %s: the etcd session ended while waiting", ErrHoldLost, s.id)
		case wr, ok := <-wch:
			if ok && wr.Err() == nil && len(wr.Events) == 0 {
				continue // a progress notification
			}
			if !ok || wr.Err() != nil {
				// A member down, an election, a compaction: read the
				// queue again after a pause, and watch from there.
				if ok && !transient(wr.Err()) {
					return nil, 0, b.clusterError("watching scan "+s.id, wr.Err())
				}
				if err := pause.wait(ctx, b.closeCh, wr.Err()); err != nil {
					return nil, 0, err
				}
			}
			return s.readQueue(ctx)
		}
	}
}

// readQueue reads the scan's keys in create-revision order, retrying
// while etcd fails transiently. The read is serializable (the member's
// own state, no round through the leader): that is safe because a
// reply is only believed if it holds our key, so it is at or after our
// put (a member behind our put is asked again, linearizably), and a key
// older than ours cannot appear later: a stale reply can only make us
// wait longer.
func (s *etcdScan) readQueue(ctx context.Context) ([]*mvccpb.KeyValue, int64, error) {
	var pause backoff
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSerializable(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)}
	for {
		g, err := s.b.cli.Get(ctx, s.dir, opts...)
		if err == nil && g.Header.Revision < s.putRev {
			opts = opts[:1:1] // that member is behind: read through the leader
			opts = append(opts, clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
			continue
		}
		if err == nil {
			return g.Kvs, g.Header.Revision, nil
		}
		if !transient(err) {
			return nil, 0, s.b.clusterError("reading the queue of scan "+s.id, err)
		}
		if werr := pause.wait(ctx, s.b.closeCh, err); werr != nil {
			return nil, 0, werr
		}
	}
}

// unlock drops the hold: its key is kept idle for this process's next
// acquisition of the scan (etcd_idle.go) or deleted at once.
func (s *etcdScan) unlock() {
	if s.mode.Load() != 0 && s.b.keepIdleKey(s) {
		s.forget()
		return
	}
	s.release()
}

// release deletes our key, if any.
func (s *etcdScan) release() {
	key, sess, putRev := s.forget()
	if key == "" || sess == nil || sess.expired(s.b.now()) {
		return
	}
	s.b.removeKey(s.id, key, putRev, sess)
}

// forget resets the scan to "no key" and returns what the key was.
func (s *etcdScan) forget() (key string, sess *etcdSession, putRev int64) {
	s.stopWatch()
	key, sess, putRev = s.key, s.sess.Load(), s.putRev
	s.key, s.rev, s.putRev, s.holder = "", 0, 0, etcdHolder{}
	s.mode.Store(0)
	s.lostHold.Store(false)
	s.b.mu.Lock()
	s.b.unregisterLocked(s)
	s.newer = 0
	s.b.mu.Unlock()
	return key, sess, putRev
}

// removeKey deletes key (only the version put at putRev). When etcd
// cannot be reached, the deletion is retried in the background until it
// succeeds or the session ends (its lease then removes the key).
func (b *etcdBackend) removeKey(id, key string, putRev int64, sess *etcdSession) {
	err := b.deleteKey(b.bgCtx, key, putRev)
	if err == nil || b.bgCtx.Err() != nil {
		return
	}
	b.stats.releaseRetries.Add(1)
	b.log.WithError(err).WithField("scan", id).Warn("removing the etcd key of a released scan failed; retrying in the background")
	b.bgWG.Add(1)
	go func() {
		defer b.bgWG.Done()
		for !sess.expired(b.now()) {
			if err := b.deleteKey(b.bgCtx, key, putRev); err == nil || b.bgCtx.Err() != nil {
				return
			}
			select {
			case <-sess.done:
				return
			case <-b.bgCtx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}

// deleteKey deletes key if it is still the version we put at revision
// putRev (0: whatever version): a retry in the background must never
// delete the key of a later hold of the same scan by this session.
func (b *etcdBackend) deleteKey(ctx context.Context, key string, putRev int64) error {
	ctx, cancel := context.WithTimeout(ctx, b.ttl/3)
	defer cancel()
	if putRev == 0 {
		_, err := b.cli.Delete(ctx, key)
		return err
	}
	_, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", putRev)).Then(clientv3.OpDelete(key)).Commit()
	return err
}

// lost reports whether the hold is gone or no longer guaranteed: its
// session ended or was not renewed in time.
func (s *etcdScan) lost() bool {
	if s.lostHold.Load() {
		return true
	}
	sess := s.sess.Load()
	if sess == nil || s.mode.Load() == 0 {
		return false
	}
	if sess.expired(s.b.now()) {
		s.b.expire(sess, "its lease was not renewed within the TTL (was this process stopped, or etcd unreachable?)")
		return true
	}
	return false
}

// writerWaiting reports a writer of another process queued for the scan.
// It must not block: the first call starts a watch of the scan's keys,
// which keeps the answer up to date until the hold is dropped; until
// the watch has answered, it says no.
func (s *etcdScan) writerWaiting() bool {
	if s.lost() {
		return true // nobody may join a lost hold
	}
	s.watchMu.Lock()
	if s.watchCancel == nil && s.heldKey != "" {
		ctx, cancel := context.WithCancel(s.b.bgCtx)
		s.watchCancel = cancel
		s.b.bgWG.Add(1)
		go s.watchWriters(ctx, s.heldKey)
	}
	s.watchMu.Unlock()
	return s.foreignW.Load()
}

// watchWriters keeps foreignW up to date while the scan is held.
func (s *etcdScan) watchWriters(ctx context.Context, ours string) {
	defer s.b.bgWG.Done()
	for ctx.Err() == nil {
		g, err := s.b.cli.Get(ctx, s.dir, clientv3.WithPrefix())
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		w := false
		for _, kv := range g.Kvs {
			if string(kv.Key) != ours && keyMode(kv) == Exclusive {
				w = true
			}
		}
		s.foreignW.Store(w)
		rev := g.Header.Revision
		wctx, cancel := context.WithCancel(ctx)
		for wr := range s.b.cli.Watch(wctx, s.dir, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if wr.Err() != nil || len(wr.Events) > 0 {
				break
			}
		}
		cancel()
	}
}

// stopWatch ends the watch of writerWaiting; the scan counts as not
// held for it until the next grant.
func (s *etcdScan) stopWatch() {
	s.watchMu.Lock()
	s.heldKey = ""
	if s.watchCancel != nil {
		s.watchCancel()
		s.watchCancel = nil
	}
	s.watchMu.Unlock()
	s.foreignW.Store(false)
}
