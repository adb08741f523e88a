package lockmgr

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WhereCluster: a holder or waiter of another process, possibly on
// another host, seen in etcd (WithEtcd).
const WhereCluster = "cluster"

// clusterStatus adds to st the holders and waiters of scan id that etcd
// knows of, except this process's own key (its leases are listed with
// their owners already). A key is a holder when nothing older blocks it
// (see etcdScan.blocked). etcd unreachable: st.ClusterError says so.
func (m *Manager) clusterStatus(id string, st *ScanStatus) {
	b := m.cluster
	if b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.start)
	defer cancel()
	g, err := b.cli.Get(ctx, b.prefix+id+"/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		st.ClusterError = b.clusterError("reading the holders of scan "+id, err).Error()
		return
	}
	ours := ""
	if s := b.current(); s != nil {
		ours = strconv.FormatInt(int64(s.id), 16)
	}
	writerAhead, anyAhead := false, false
	for _, kv := range g.Kvs {
		h := decodeHolder(kv.Value)
		mode := keyMode(kv)
		waiting := anyAhead && (mode == Exclusive || writerAhead)
		anyAhead = true
		writerAhead = writerAhead || mode == Exclusive
		if strings.HasSuffix(string(kv.Key), "/"+ours) && ours != "" {
			continue
		}
		e := Holder{Mode: mode, PID: h.PID, Command: h.Command, User: h.User, Owner: h.Owner,
			Since: h.Since, Where: WhereCluster, Hostname: h.Hostname}
		if waiting {
			st.Waiters = append(st.Waiters, e)
		} else {
			st.Holders = append(st.Holders, e)
		}
	}
}

// clusterScanIDs adds the scans with a key in etcd to ids.
func (m *Manager) clusterScanIDs(ids map[string]bool) error {
	b := m.cluster
	if b == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.start)
	defer cancel()
	g, err := b.cli.Get(ctx, b.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return b.clusterError("listing the locked scans", err)
	}
	for _, kv := range g.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), b.prefix)
		if id, _, ok := strings.Cut(rest, "/"); ok && ValidateScanID(id) == nil {
			ids[id] = true
		}
	}
	return nil
}

func decodeHolder(v []byte) etcdHolder {
	var h etcdHolder
	_ = json.Unmarshal(v, &h)
	return h
}

// current returns the live session, or nil.
func (b *etcdBackend) current() *etcdSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sess
}

// PurgeClusterStale removes (or with dry only lists) the keys under the
// prefix that no lease will ever remove: keys put without a lease (by
// hand, with etcdctl put) or whose value is not a holder's. A key with a
// lease is left alone: it goes when its holder releases or its lease
// expires. It returns the keys; nil without WithEtcd.
func (m *Manager) PurgeClusterStale(dry bool) ([]string, error) {
	b := m.cluster
	if b == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.start)
	defer cancel()
	g, err := b.cli.Get(ctx, b.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, b.clusterError("listing the lock keys", err)
	}
	var out []string
	for _, kv := range g.Kvs {
		if kv.Lease != 0 && decodeHolder(kv.Value).Mode != 0 {
			continue
		}
		if !dry {
			// Only if it is still the very key we looked at.
			_, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).
				Then(clientv3.OpDelete(string(kv.Key))).Commit()
			if err != nil {
				return out, b.clusterError("removing "+string(kv.Key), err)
			}
		}
		out = append(out, string(kv.Key))
	}
	return out, nil
}
