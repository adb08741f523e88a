// Package fusefs is a FUSE overlay of a scan database that takes scan
// locks (package lockmgr) for the programs that use it, so that programs
// which know nothing about locks read and write scans safely.
//
// It is a loopback file system: node (every inode of the mount) embeds
// go-fuse's fs.Inode and implements each operation on SOURCE itself,
// through descriptors (backing.go); open files are go-fuse's
// fs.LoopbackFile, wrapped in handle. It takes a plain Options struct and
// knows nothing of flags.
//
// # Which scan
//
// The scan of a path is its first component under the mount root. Root
// entries that are not directories (users.json, romidb) and names that
// are not valid scan ids (lockmgr.ValidateScanID: names starting with
// '.', too long...) belong to no scan and take no lock. The real lock
// directory SOURCE/.locks is hidden at the root; the status view takes
// its name.
//
// # What takes which lock, and when it is released
//
//   - Open for reading (O_RDONLY without O_TRUNC or O_APPEND): shared.
//     Open for writing, O_TRUNC, O_APPEND, create (also O_TMPFILE):
//     exclusive. The lock is taken before the backing file is opened and
//     belongs to the file handle; it is released on the kernel's RELEASE
//     of that handle, after the backing file is closed. FLUSH (every
//     close(2) of a dup'd descriptor) releases nothing.
//   - Changes without a handle hold the exclusive lock for the duration
//     of the operation: setattr (truncate, chmod, chown, utimens),
//     unlink, rmdir, mkdir, mknod, symlink, link, rename, setxattr,
//     removexattr (a setattr that changes nothing takes none). Link and
//     rename lock the scans of both names, in sorted order. fallocate and copy_file_range need a descriptor open
//     for writing, whose exclusive lease covers them.
//   - Lookup, getattr, statx, readdir, readlink, getxattr, listxattr and
//     statfs take no lock.
//
// # Acting on SOURCE
//
// The daemon usually runs as root for users the kernel checks
// (default_permissions with allow_other). The kernel checks a caller's
// permission on the FUSE inode; the daemon must then act on that inode and
// nothing else, although an operation may wait for its scan lock for a
// long time, during which anyone who may write a directory of SOURCE can
// rename, replace or swap names there. So:
//
//   - Nothing is resolved before the lock is granted (underLock runs the
//     operation, which resolves, only then).
//   - Every path is resolved from a descriptor of SOURCE's root (opened by
//     path for each operation, as the lock manager reaches the lock
//     directory) with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
//     RESOLVE_NO_MAGICLINKS), in pieces below PATH_MAX (so trees deeper
//     than PATH_MAX work), or by an O_NOFOLLOW walk where openat2 is
//     missing. No symlink is followed anywhere in a path, for reads as
//     for writes.
//   - What is found is checked to be the node's inode (type and inode
//     number, as go-fuse's loopback numbers them). A symlink in its place
//     gives ELOOP; another inode ESTALE, so that the kernel looks the name
//     up again and checks the new inode itself. Nothing is done to it.
//   - Changes of a node's own attributes go through an O_PATH descriptor
//     of the checked inode (fchownat(AT_EMPTY_PATH), or /proc/self/fd/N
//     for chmod, truncate, utimensat and xattrs; xattr reads of a file
//     that is open use the open file's descriptor, node_files.go); entries
//     are changed with *at calls on a checked descriptor of the
//     directory; links are made from a descriptor of the checked target.
//     Opens add O_NONBLOCK (a
//     FIFO swapped in cannot block a daemon thread), truncate for O_TRUNC
//     only once the file is checked, and a create that finds the name
//     taken answers ESTALE rather than open a file the kernel did not check.
//   - New inodes are given to their creator with fchownat on a descriptor
//     of the new inode (for mkdir, mknod and symlink after checking it is
//     still the daemon's), keeping the group of a setgid directory.
//   - No ioctl is passed through: ENOTTY for every one (node.Ioctl).
//   - What the kernel does not check, scanlockfs does before it asks for a
//     lock: a SETATTR that changes nothing (chown(path, -1, -1)) takes no
//     lock, and only the owner (or root) may set or remove system.*
//     attributes (POSIX ACLs), else EPERM.
//
// Operations are not performed with the caller's credentials
// (setfsuid/setfsgid and groups per request): the kernel has already
// checked them, with groups and ACLs, on the very inode acted on, and
// FUSE does not send the caller's groups, which would have to be read
// from /proc/PID/status on every request. BenchmarkCallerCredentialSwitch
// measures that at about ten times the daemon's whole backing open
// (BenchmarkOpenBacking); the README gives the figures.
//
// # Owners and waiting
//
// The owner of a lock is the calling process: FUSE reports the calling
// thread, which is mapped to its thread group (owner.go). The owner key
// is the process's pid and start time (lockmgr.ProcessKey), read once per
// process and kept with a pidfd that proves the pid still names it (a
// thread pidfd for the other threads of a process), so that a process
// that gets the pid of an exited holder is another owner.
// lockmgr lets an
// owner take a scan it holds again, and upgrade a shared lock it is the
// only holder of; two shared holders that both want exclusive get
// EDEADLK. A process that inherited a descriptor into a scan from an
// ancestor that owns the scan here (fork, or a shell redirection opened
// before the command starts) acts as that ancestor (inherit.go), so that
// sh -c 'cat scan/a > scan/b' does not wait for its own shell; the
// ancestor is matched by pid and start time, so the lease of an exited
// opener can never be taken over through a reused pid. A process that
// holds the scan directly on SOURCE (its flock on the lock file), and its
// descendants, act as that holder: its lock covers them, and they are
// granted at once as loans under it (inherit.go, lockmgr.Loan). Both
// rules are consulted only when a request would wait. A request
// waits for its lock until the timeout (EBUSY) or
// until the caller is interrupted (the FUSE request's context is
// cancelled: EINTR, and nothing stays queued); with O_NONBLOCK it fails
// with EAGAIN at once. No mutex of this package is held while waiting.
// errno.go is the one place where errors become errno values.
//
// # Status view
//
// MOUNTPOINT/.locks is a virtual directory (locksdir.go):
// <scan_id>.info (who holds and waits for a scan, JSON), status.json
// (every scan with activity) and metrics (Prometheus text). Each open
// renders one snapshot, served with direct I/O; the files report size 0
// like /proc files. Reading it takes no scan lock and never waits for
// one; every change inside it fails with EROFS, and removing, replacing
// or renaming .locks itself with EPERM, except what flock(1) and plantdb
// do with its lock files <scan_id>.lock (locksdir_lock.go: flock(2) on
// one takes the scan's lock) and plantdb's log and .info records
// (locksdir_lock_plantdb.go), none of which touches SOURCE. The documents
// are package scanstatus's model (status_json.go converts lockmgr's
// status into it, status_viewer.go decides what each reader may see);
// scanstatus also holds the client that reads a running mount's view.
//
// # Client locks
//
// The mount asks the kernel to forward flock(2) (EnableLocks, without
// POSIX locks): on a lock file of .locks it takes the scan lock; on a
// file of a scan it is taken on the handle's backing descriptor, so that
// programs on SOURCE see it too, and a waiting one can be interrupted
// (locksdir_lock_flock.go). fcntl(2) locks are handled by the kernel
// among the mount's clients, with POSIX semantics, and are not forwarded
// to the backing files. The scan locks are what protects data between
// the mount and direct users.
//
// # Caching and data path
//
// The kernel caches names and attributes for the entry and attribute
// timeouts (Options; 1 s by default, no negative entries), and opens
// never set FOPEN_KEEP_CACHE. What a program that gets the lock after a
// writer on SOURCE released it must see (data, size, stat after the
// open) is made true at OPEN, under the lock (node_attrcache.go). Names
// created, removed or renamed on SOURCE, and modes, owners and times
// changed there, are passed to the kernel as inotify reports them
// (notify.go), from goroutines of their own, never from a handler;
// directories whose changes inotify may miss (network file systems,
// watch limit) get an entry timeout of 100 ms at most instead. Reads and
// writes use the kernel's passthrough to the backing file where
// available (root, Linux 6.9 and later), so they never reach the
// daemon; open, create and release always do.
package fusefs
