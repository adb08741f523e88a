// Package lockmgr provides shared/exclusive locks on the scans of a scan
// database, across goroutines and processes, on plantdb's on-disk
// protocol.
//
// # Protocol
//
// Scan S of the database ROOT is the directory ROOT/S. Its lock is the
// file ROOT/.locks/S.lock, locked with flock(2): LOCK_SH for Shared
// (LOCK_EX while plantdb is active on the scan, see below), LOCK_EX for
// Exclusive. plantdb's ScanLockManager locks the very same
// file the same way, so Go and Python holders exclude each other.
// ROOT/.locks/S.info holds JSON metadata (plantdb's fields scan_id,
// lock_type, user, timestamp, pid, thread_id, plus ours: owner,
// owner_pid, hostname and "tool":"scanlockfs"; no path or note, since the
// file is as readable as the lock directory); see Metadata. ROOT/.locks/S.gate exists only for
// scans on which a writer of ours once had to wait (see Fairness), until
// PurgeStale finds no writer waiting on it. ROOT/.locks/S.wait holds the
// waiting records of processes of ours that wait for the scan
// (waitrec.go), so that other processes' Status sees them.
//
// # Permissions
//
// The lock directory is created with mode 02775 and lock, gate and info
// files with 0664, whatever the umask (WithDirMode, WithFileMode): every
// user of the scan tree must be able to create lock files and open them
// for writing, as plantdb does. To share a tree between users, give them
// a common group, chgrp the lock directory to it; the setgid bit makes
// new files inherit the group. Lock files are opened for reading and
// writing (where flock is emulated with fcntl locks, as on NFS, an
// exclusive lock needs it), read-only when we may not write them, and
// never through a symbolic link.
//
// Every member of that group can put anything in the lock directory, and
// the manager often runs as root, so (lockdir.go) the lock directory is
// used through a descriptor opened without following a symbolic link (a
// symbolic link as the lock directory is refused with ErrLockFile); every
// file there is checked with O_PATH and fstat to be a regular file with
// one link before it is opened for real (a FIFO, device, socket, symbolic
// link, directory or hard link where a lock file should be is an
// ErrLockFile naming it); .info files are read up to 64 KiB; and
// PurgeStale removes only files that look like ours or plantdb's. The
// user an .info file names is only a claim: Status reports it as
// Holder.ClaimedUser beside the process's real user.
// Users who may only read the tree can still query it: a manager opened
// WithReadOnly needs read access only, changes nothing on disk and
// refuses to lock (ErrReadOnly).
//
// # Invariants
//
//   - A lock file is never unlinked while anybody may hold it: after every
//     successful flock the descriptor is compared (device, inode) with
//     what the lock file's name names now, and on a mismatch the lock is
//     dropped and taken again on that; lock files are only unlinked by
//     PurgeStale while holding them exclusively. The name is looked up
//     relative to the lock directory's parent, as .locks/S.lock (one
//     short lookup instead of the whole path): it still goes through the
//     lock directory's entry, so a lock directory removed, renamed or
//     replaced since it was opened shows as a mismatch, and the lock
//     file is then opened in the directory the path names now (or a
//     symbolic link there refused). The whole path is walked instead once
//     a second, so that a replaced ancestor (the scan root moved away and
//     another put in its place) is noticed too.
//   - One flock per scan per process. Inside the process, holders are
//     counted in memory: flock on two descriptors of one file would
//     conflict with itself. The process holds the flock in the strongest
//     mode any of its holders needs, from its first grant to its last
//     release.
//   - No mutex is held while waiting: waiters sleep on a channel that is
//     closed on every change of the scan's state, and only one goroutine
//     per scan talks to the backend (the kernel) at a time: the one that
//     set busy, to take, convert or drop the process's hold.
//   - A scan id is validated (ValidateScanID) before any path is built
//     from it, so every path stays inside the lock directory.
//
// # Structure
//
// Each piece of state has one owner and one mutex:
//
//   - Manager (manager.go) ties the parts together: configuration, the
//     lock directory's descriptor (lockdir.go), counters (stats.go),
//     Status and List (status.go), PurgeStale (stale.go). Its own fields
//     do not change after New.
//   - scheduler (sched.go) is the in-process half and knows nothing
//     about files: scheduler.mu guards the map of scans in use and their
//     reference counts; each scan's mu guards its owners, leases, queue
//     and the mode the backend holds for the process. Admission, FIFO
//     order, upgrades and ErrDeadlock are decided here.
//   - a backend (backend.go) holds a scan across processes for the whole
//     process and may report a hold it lost. The scheduler calls it only
//     from the scan's busy goroutine and never with its mutex held
//     (except writerWaiting and waiting, which do not block).
//   - flockBackend (flock.go) is the default backend: flockBackend.mu
//     guards its lock files and the idle list; each lockFile's mu guards
//     the flock mode held and the .info state (info.go, written by one
//     sweeper, infoSweeper.mu); gateMu guards the gate's descriptor;
//     waitRecord.mu the waiting record (waitrec.go: S.wait, which lets
//     other processes see ours waiting). The plantdb-compatibility rules
//     are in plantdb.go.
//   - loans (loan.go): leases granted under another process's flock
//     (Loan), recorded by the scheduler like any lease; the scan's keeper
//     goroutine takes the backend's hold for them, as the busy goroutine.
//
// Acquire options (CancelGrace, RetryDeadlock, Loan; Probe for
// TryAcquire) carry per-request policy; Options (WithTimeout...)
// configure the manager.
//
// # Descriptors
//
// A scan's lock file stays open from its first use until Close, or until
// more than 1,024 scans are idle (nobody holds or waits for them; at most
// a quarter of RLIMIT_NOFILE) and it is the one that became idle least
// recently; releasing only unlocks it. This saves an open and a close per
// acquisition and is safe because of the check after every flock: if another process's
// clean-up (or plantdb's release) unlinked the file meanwhile, the flock
// on the old descriptor succeeds, the check fails, and the file the path
// names now is opened and locked instead (Stats.Replaced counts it).
// Once S.gate exists, it stays open too while the scan is in use, so that
// readers test it with one fcntl; it is closed when the scan goes idle or
// its lock file is closed.
//
// # Metadata
//
// Writing S.info costs an inode creation and removal (about 150 µs on
// ext4, ten times the lock itself), so it is written in the background:
// once this process has held the scan's flock for WithInfoDelay (default
// 2 ms), a timer writes S.info describing the request that took the flock
// (its owner, the mode, the time of the grant, this PID). What a reader
// of S.info can see:
//
//   - either no file or a complete one: it is written to a temporary file
//     and renamed into place;
//   - no S.info of ours for a lock held less than the delay, or in the
//     first delay (plus the write's own time) of a longer hold;
//   - never an S.info of ours after our flock is gone: the last release
//     removes it, if it is still the file we wrote, before unlocking, and
//     waits for a write in flight to finish first;
//   - after an upgrade, "exclusive" once the delay has passed again.
//
// Readers of ours joining a held flock do not rewrite it; with shared
// holders in several processes, the last writer's file wins (as in
// plantdb). WithInfoDelay(0) writes the file before Acquire returns.
//
// # Owners
//
// An Owner is a user and a key. Keys of processes are ProcessKey's pid and
// start time ("pid:PID@START", ProcessOwner for the calling process), so
// that a process that later gets the same pid is another owner.
//
// An Owner that holds a scan may take it again: an exclusive holder in
// any mode, a shared holder in shared mode. A shared holder asking for
// exclusive is an upgrade, granted once it is the only holder in this
// process; two shared holders that both ask for exclusive would wait for
// each other forever, so the second gets ErrDeadlock at once (with the
// RetryDeadlock option, once the deadlock has lasted that long: a holder
// about to release its shared lock then causes none).
//
// flock(2) conversion is not atomic: the kernel removes the shared lock
// before it tries the exclusive one, even with LOCK_NB, so a failed
// attempt leaves the process without any lock. The manager therefore only
// tries the conversion when /proc/locks shows no other holder of the file,
// and retakes the shared lock at once if the attempt still fails. In the
// rare case that another process took the scan exclusively in that
// instant, the upgrade goes on as a plain exclusive request and a warning
// is logged: data read before the upgrade may be stale. It also goes on as
// a plain exclusive request, dropping the shared flock, when the shared
// hold it converts is released while it waits and nobody else in the
// process holds the scan.
//
// Across processes the kernel cannot tell who waits for whom: owners in
// two processes that both hold a scan shared and both ask for exclusive
// wait until one of them times out (ErrTimeout), or releases its read.
//
// # Fairness
//
// Inside a process, requests are served first come, first served, except
// that an owner's reentrant requests and upgrades go first; new shared
// requests queue behind a waiting exclusive one. Across processes flock
// has no queue, so a writer of ours that has to wait sets a gate: an OFD
// read lock (fcntl) on the first byte of S.gate, which readers test
// without locking anything. While a gate is set, readers of ours neither
// take a new shared flock nor join the shared flock their process already
// holds (otherwise overlapping readers of one process would keep it for
// ever). plantdb's readers do not know the gate.
//
// flock cannot be waited for with a deadline, so cross-process waits poll
// with LOCK_NB and an exponential back-off from 20 µs up to 500 µs.
//
// # Mixed use with plantdb
//
// Our processes exclude each other and plantdb processes as long as
// nobody unlinks a lock file that is held. plantdb does: its release runs
// flock(LOCK_UN), close, unlink(S.lock), unlink(S.info), and its stale
// clean-up at start-up unlinks files after unlocking them. A process that
// takes the flock between plantdb's unlock and its unlink holds a file
// that then loses its name, and the next plantdb acquisition creates and
// locks a new one. Our processes close that window for plantdb's
// release: after a flock, while S.info still names a live process that
// is not a scanlockfs process and holds no flock on our file, we wait (up
// to a second) until S.info goes away, and only then check the path
// (plantdb unlinks S.lock before S.info, so this order cannot miss the
// unlink). An uncontended acquisition costs two flock calls and three
// stat calls (S.info, and the lock file's name after the flock and
// before the release). What stays open:
//
//   - plantdb's stale clean-up (it writes no S.info) racing one of our
//     acquisitions, a plantdb release we could not see coming (its S.info
//     removed by another release) and a plantdb reader joining a shared
//     flock of ours taken before this process saw any sign of plantdb:
//     each unlinks our file during our hold, and a name guard (an inotify
//     watch on the lock directory, nameguard.go) then creates and locks
//     the new S.lock at once (for holds taken with LOCK_SH, and any hold
//     where plantdb is known), so that only a plantdb attempt within the
//     microseconds between the unlink and our flock gets in (a plantdb
//     process stopped for more than a second in its release, whose unlink
//     comes late, is caught the same way).
//
// plantdb also races itself: its release unlinks a file another plantdb
// process may still hold (an orphan), or have opened and not yet locked.
// Where plantdb is known to be active on a scan, or cannot be ruled out,
// a grant waits for the holder of an orphaned S.lock in a conflicting
// mode (found in /proc/locks and /proc/PID/fd), locks the orphans that
// other processes have open (fences, fence.go), shared requests take
// LOCK_EX so that no plantdb reader shares our flock, and a hand-over
// leaves the scan free for plantdb's next attempt once plantdb was seen
// trying: see foreign.go.
//
// Our release checks that the path still names our file (or a guard's);
// if not, it logs a warning and counts it in Stats.LostLockFiles, because exclusion may
// have been broken during the hold. (A sticky lock directory would stop
// plantdb from unlinking our files, but where fs.protected_regular is set
// it also stops plantdb from opening them with O_CREAT.)
//
// # Several hosts
//
// WithEtcd makes every hold also a key in etcd (etcd*.go), so that hosts
// whose storage does not forward flock exclude each other. The process
// has one session: a lease of EtcdConfig.TTL that it renews itself every
// third of the TTL (etcd_session.go), so that it knows a lower bound of
// the lease's expiry (the start of its last successful renewal plus the
// TTL granted). Its hold of scan S is the key PREFIX/scans/S/LEASE (LEASE
// in hexadecimal), attached to the lease, whose value is JSON naming the
// mode, host, pid, command, user, owner and time. Keys are served in the
// order of their create revision, as in etcd's read-write lock recipe: a
// reader holds the scan once no older key is a writer's, a writer once no
// key is older than its own; waiters watch the scan's keys for deletions.
// Waiters have keys too, so readers of one host queue behind a writer of
// another, and Status shows every host's holders and waiters
// (WhereCluster). An upgrade gives its shared key up and queues an
// exclusive one: two hosts upgrading at once would otherwise wait for
// each other's shared key for ever.
//
// The local flock is taken first and the key second; the key is deleted
// first and the flock dropped second (etcd_hold.go says why that cannot
// deadlock). A key that cannot be deleted (etcd unreachable) is retried in
// the background until its session ends.
//
// A released key nobody queued behind is not deleted at once but kept
// idle for EtcdConfig.KeepIdle (etcd_idle.go): the process's next
// acquisition of the scan within that time takes it back in place, in a
// transaction that checks that it is still the version left and that no
// key of the scan is newer (so the order is the one a new key would get);
// when the key already names the new holder, that transaction only reads.
// An idle key is deleted when KeepIdle is up, or as soon as another
// process puts a key for the scan: the backend watches every put under
// the prefix while it runs.
//
// A session ends when etcd says the lease is gone, or when the local
// clock passes the lower bound of its expiry without a renewal (a process
// stopped or cut off longer than the TTL). Its holds are then reported to
// the lost-hold callback (logged, counted in Stats.LostLockFiles),
// Lease.Lost reports true for every lease under them (fusefs fails reads
// and writes through such handles with EIO), nobody in this process joins
// them (new requests wait until they are released), and the next
// acquisition creates a new session. New fails with ErrCluster, naming
// the endpoints, when the cluster does not answer within StartTimeout.
package lockmgr
