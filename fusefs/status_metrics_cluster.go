package fusefs

import "scanlockfs/lockmgr"

// The cluster series, only for a mount with --etcd:
//
//	scanlockfs_cluster_session_up               gauge    1 while the etcd session (lease) is live
//	scanlockfs_cluster_sessions_total           counter  sessions created
//	scanlockfs_cluster_sessions_lost_total      counter  sessions that ended while the mount ran
//	scanlockfs_cluster_lease_renewals_total     counter  lease renewals, by result="ok"|"error"
//	scanlockfs_cluster_lock_seconds_sum/_count  summary  time to take cluster holds (waits included)
//	scanlockfs_cluster_lock_waits_total         counter  cluster holds that waited for another host
//	scanlockfs_cluster_release_retries_total    counter  key deletions retried in the background
func renderClusterMetrics(w *promWriter, c lockmgr.ClusterStats) {
	if !c.Enabled {
		return
	}
	up := "0"
	if c.SessionUp {
		up = "1"
	}
	w.gauge("scanlockfs_cluster_session_up", "1 while this mount's etcd session (lease) is live.", up)
	w.counter("scanlockfs_cluster_sessions_total", "etcd sessions (leases) created.", u(c.Sessions))
	w.counter("scanlockfs_cluster_sessions_lost_total", "etcd sessions that ended while the mount ran (its holds were lost).", u(c.SessionsLost))
	w.family("scanlockfs_cluster_lease_renewals_total", "counter", "etcd lease renewals, by result.")
	w.sample("scanlockfs_cluster_lease_renewals_total", `result="ok"`, u(c.Renewals))
	w.sample("scanlockfs_cluster_lease_renewals_total", `result="error"`, u(c.RenewalErrors))
	w.family("scanlockfs_cluster_lock_seconds", "summary", "Time taken to get cluster holds in etcd, waits for other hosts included.")
	w.sample("scanlockfs_cluster_lock_seconds_sum", "", fmtFloat(c.AcquireTime.Seconds()))
	w.sample("scanlockfs_cluster_lock_seconds_count", "", u(c.Acquires))
	w.counter("scanlockfs_cluster_lock_waits_total", "Cluster holds that waited for another host.", u(c.Waits))
	w.counter("scanlockfs_cluster_release_retries_total", "Releases whose etcd key deletion was retried in the background.", u(c.ReleaseRetries))
}
