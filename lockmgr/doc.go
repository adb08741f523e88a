// Package lockmgr provides shared/exclusive locks on the scans of a scan
// database, across goroutines and processes, on plantdb's on-disk
// protocol.
//
// # Protocol
//
// Scan S of the database ROOT is the directory ROOT/S. Its lock is the
// file ROOT/.locks/S.lock, locked with flock(2): LOCK_SH for Shared,
// LOCK_EX for Exclusive. plantdb's ScanLockManager locks the very same
// file the same way, so Go and Python holders exclude each other.
// ROOT/.locks/S.info holds JSON metadata (plantdb's fields scan_id,
// lock_type, user, timestamp, pid, thread_id, plus ours); it is written
// atomically and removed by the last release in this process if it is
// still the file we wrote. ROOT/.locks/S.gate exists only for scans on
// which a writer of ours once had to wait (see Fairness).
//
// # Invariants
//
//   - A lock file is never unlinked while anybody may hold it: after every
//     successful flock the descriptor is compared (device, inode) with
//     the path, and on a mismatch the lock is dropped and taken again on
//     what the path names now; lock files are only unlinked by PurgeStale
//     while holding them exclusively.
//   - One flock per scan per process. Inside the process, holders are
//     counted in memory: flock on two descriptors of one file would
//     conflict with itself. The process holds the flock in the strongest
//     mode any of its holders needs, from its first grant to its last
//     release.
//   - No mutex is held while waiting: waiters sleep on a channel that is
//     closed on every change of the scan's state, and only one goroutine
//     per scan talks to the kernel at a time (the one that set busy).
//   - A scan id is validated (ValidateScanID) before any path is built
//     from it, so every path stays inside the lock directory.
//
// # Owners
//
// An Owner that holds a scan may take it again: an exclusive holder in
// any mode, a shared holder in shared mode. A shared holder asking for
// exclusive is an upgrade, granted once it is the only holder in this
// process; two shared holders that both ask for exclusive would wait for
// each other forever, so the second gets ErrDeadlock at once.
//
// flock(2) conversion is not atomic: the kernel removes the shared lock
// before it tries the exclusive one, even with LOCK_NB, so a failed
// attempt leaves the process without any lock. The manager therefore only
// tries the conversion when /proc/locks shows no other holder of the file,
// and retakes the shared lock at once if the attempt still fails. In the
// rare case that another process took the scan exclusively in that
// instant, the upgrade goes on as a plain exclusive request and a warning
// is logged: data read before the upgrade may be stale.
//
// # Fairness
//
// Inside a process, requests are served first come, first served, except
// that an owner's reentrant requests and upgrades go first; new shared
// requests queue behind a waiting exclusive one. Across processes flock
// has no queue, so a writer of ours that has to wait takes S.gate
// exclusively, and readers of ours take their first shared flock only
// while S.gate is free. plantdb's readers do not know the gate.
//
// flock cannot be waited for with a deadline, so cross-process waits poll
// with LOCK_NB and an exponential back-off from 20 µs up to 1 ms.
package lockmgr
