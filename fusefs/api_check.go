package fusefs

import "github.com/hanwen/go-fuse/v2/fs"

// The go-fuse interfaces node and handle implement. node embeds fs.Inode
// only, so every operation on SOURCE is one of ours and works through
// descriptors (backing.go); handle embeds *fs.LoopbackFile, whose methods
// all work on the descriptor of the open file, except Ioctl, overridden.
var (
	_ = (fs.NodeLookuper)((*node)(nil))       // no lock; hides the lock directory, shows the status view
	_ = (fs.NodeGetattrer)((*node)(nil))      // no lock
	_ = (fs.NodeStatxer)((*node)(nil))        // no lock
	_ = (fs.NodeReadlinker)((*node)(nil))     // no lock
	_ = (fs.NodeStatfser)((*node)(nil))       // no lock
	_ = (fs.NodeGetxattrer)((*node)(nil))     // no lock
	_ = (fs.NodeListxattrer)((*node)(nil))    // no lock
	_ = (fs.NodeOpendirHandler)((*node)(nil)) // no lock; filters the lock directory, lists the status view
	_ = (fs.NodeOpener)((*node)(nil))         // shared or exclusive, held by the handle
	_ = (fs.NodeCreater)((*node)(nil))        // exclusive, held by the handle
	_ = (fs.NodeTmpfiler)((*node)(nil))       // exclusive, held by the handle
	_ = (fs.NodeCopyFileRanger)((*node)(nil)) // between our handles' descriptors
	_ = (fs.NodeSetattrer)((*node)(nil))      // exclusive for the operation; none for a no-op
	_ = (fs.NodeSetxattrer)((*node)(nil))     // exclusive for the operation; system.* only for the owner
	_ = (fs.NodeRemovexattrer)((*node)(nil))  // exclusive for the operation; system.* only for the owner
	_ = (fs.NodeMkdirer)((*node)(nil))        // exclusive for the operation
	_ = (fs.NodeRmdirer)((*node)(nil))        // exclusive for the operation
	_ = (fs.NodeUnlinker)((*node)(nil))       // exclusive for the operation
	_ = (fs.NodeMknoder)((*node)(nil))        // exclusive for the operation
	_ = (fs.NodeSymlinker)((*node)(nil))      // exclusive for the operation
	_ = (fs.NodeLinker)((*node)(nil))         // exclusive on both scans
	_ = (fs.NodeRenamer)((*node)(nil))        // exclusive on both scans
	_ = (fs.NodeIoctler)((*node)(nil))        // ENOTTY for every handle
	_ = (fs.NodeOnForgetter)((*node)(nil))    // closes a directory's kept descriptor

	_ = (fs.FileReleaser)((*handle)(nil))        // closes the backing fd, then releases the lease
	_ = (fs.FilePassthroughFder)((*handle)(nil)) // promoted: keeps kernel passthrough on
	_ = (fs.FileReader)((*handle)(nil))          // counts reads that reach the daemon
	_ = (fs.FileWriter)((*handle)(nil))          // counts writes that reach the daemon
	_ = (fs.FileWritever)((*handle)(nil))        // counts writes that reach the daemon
	_ = (fs.FileSetattrer)((*handle)(nil))       // promoted; locking is in node.Setattr
	_ = (fs.FileAllocater)((*handle)(nil))       // promoted: fallocate needs a write fd, whose exclusive lease covers it
	_ = (fs.FileFlusher)((*handle)(nil))         // file_flush.go: ENOSYS; opens say FOPEN_NOFLUSH
	_ = (fs.FileIoctler)((*handle)(nil))         // ENOTTY (node.Ioctl answers first anyway)
	_ = (fs.FileSetlker)((*handle)(nil))         // promoted: flock(2) LOCK_NB/LOCK_UN on the backing descriptor
	_ = (fs.FileSetlkwer)((*handle)(nil))        // flock(2) on the backing descriptor, polled so that it can be interrupted

	// The lock files of .locks (locksdir_lock.go): flock(2) takes the scan lock.
	_ = (fs.NodeOpener)((*lockFile)(nil))     // no lock; checks the caller may lock shared
	_ = (fs.NodeSetlker)((*lockFile)(nil))    // flock LOCK_NB / LOCK_UN: shared or exclusive, held by the handle
	_ = (fs.NodeSetlkwer)((*lockFile)(nil))   // flock that waits: shared or exclusive, held by the handle
	_ = (fs.FileReleaser)((*lockHandle)(nil)) // the last close gives the lease back

	// The status view (locksdir.go) is read-only: every change fails with
	// EROFS, but a create of a lock file or plantdb's log and plantdb's
	// unlinks (locksdir_lock_plantdb.go). go-fuse would answer some of
	// these itself, but not all in the same way (an Unlink or Rmdir
	// without a handler even succeeds), so each is explicit.
	_ = (fs.NodeSetattrer)((*statusDir)(nil))
	_ = (fs.NodeCreater)((*statusDir)(nil)) // a lock file or plantdb's log; EROFS for anything else
	_ = (fs.NodeMkdirer)((*statusDir)(nil))
	_ = (fs.NodeMknoder)((*statusDir)(nil))
	_ = (fs.NodeSymlinker)((*statusDir)(nil))
	_ = (fs.NodeLinker)((*statusDir)(nil))
	_ = (fs.NodeUnlinker)((*statusDir)(nil)) // plantdb's unlinks succeed; EROFS for anything else
	_ = (fs.NodeRmdirer)((*statusDir)(nil))
	_ = (fs.NodeRenamer)((*statusDir)(nil))
	_ = (fs.NodeTmpfiler)((*statusDir)(nil))
	_ = (fs.NodeSetxattrer)((*statusDir)(nil))
	_ = (fs.NodeRemovexattrer)((*statusDir)(nil))
)

// node must not implement fs.NodeReleaser: go-fuse would call it instead
// of the handle's FileReleaser, and a handle's lease would never be
// released. node has a field named Release (node.go), so adding a
// Release method to node does not compile ("field and method with the
// same name"); this line fails to compile if the field goes.
var _ noRelease = node{}.Release

// Left out on purpose:
//
//   - NodeReaddirer, NodeOpendirer: go-fuse uses OpendirHandle.
//   - NodeAccesser: with allow_other the kernel checks access itself
//     (default_permissions); without it only the daemon's user can use
//     the mount.
//   - NodeGetlker, NodeSetlker, NodeSetlkwer on node: flock(2) on a file
//     of a scan goes to the handle (its backing descriptor); fcntl locks
//     are not forwarded (CAP_POSIX_LOCKS is off), the kernel keeps them.
//   - NodeFsyncer, NodeLseeker, NodeAllocater, NodeReader, NodeWriter:
//     go-fuse falls back to the handle's methods, which work on the
//     descriptor of the open file.
