package fusefs

import "github.com/hanwen/go-fuse/v2/fs"

// The go-fuse interfaces node and handle implement themselves. Every
// other interface of *fs.LoopbackNode and *fs.LoopbackFile is promoted
// unchanged by embedding.
var (
	_ = (fs.NodeWrapChilder)((*node)(nil))
	_ = (fs.NodeLookuper)((*node)(nil))       // hides the lock directory, shows the status view
	_ = (fs.NodeOpendirHandler)((*node)(nil)) // filters the lock directory, lists the status view
	_ = (fs.NodeOpener)((*node)(nil))         // shared or exclusive, held by the handle
	_ = (fs.NodeCreater)((*node)(nil))        // exclusive, held by the handle
	_ = (fs.NodeTmpfiler)((*node)(nil))       // exclusive, held by the handle
	_ = (fs.NodeCopyFileRanger)((*node)(nil)) // unwraps our handles
	_ = (fs.NodeSetattrer)((*node)(nil))      // exclusive for the operation
	_ = (fs.NodeSetxattrer)((*node)(nil))     // exclusive for the operation
	_ = (fs.NodeRemovexattrer)((*node)(nil))  // exclusive for the operation
	_ = (fs.NodeMkdirer)((*node)(nil))        // exclusive for the operation
	_ = (fs.NodeRmdirer)((*node)(nil))        // exclusive for the operation
	_ = (fs.NodeUnlinker)((*node)(nil))       // exclusive for the operation
	_ = (fs.NodeMknoder)((*node)(nil))        // exclusive for the operation
	_ = (fs.NodeSymlinker)((*node)(nil))      // exclusive for the operation
	_ = (fs.NodeLinker)((*node)(nil))         // exclusive on both scans
	_ = (fs.NodeRenamer)((*node)(nil))        // exclusive on both scans

	_ = (fs.FileReleaser)((*handle)(nil))        // closes the backing fd, then releases the lease
	_ = (fs.FilePassthroughFder)((*handle)(nil)) // promoted: keeps kernel passthrough on
	_ = (fs.FileReader)((*handle)(nil))          // counts reads that reach the daemon
	_ = (fs.FileWriter)((*handle)(nil))          // counts writes that reach the daemon
	_ = (fs.FileWritever)((*handle)(nil))        // counts writes that reach the daemon
	_ = (fs.FileSetattrer)((*handle)(nil))       // promoted; locking is in node.Setattr
	_ = (fs.FileAllocater)((*handle)(nil))       // promoted: fallocate needs a write fd, whose exclusive lease covers it
	_ = (fs.FileFlusher)((*handle)(nil))         // file_flush.go: releases nothing; never EMFILE
)

// The status view (locksdir.go, locksdir_file.go): in-memory nodes that
// take no lock. Both node types refuse every change with EROFS
// (Setattr, Create, Mkdir, Mknod, Symlink, Link, Unlink, Rmdir, Rename,
// Tmpfile, Setxattr, Removexattr; asserted next to the methods).
var (
	_ = (fs.NodeLookuper)((*statusDir)(nil))   // status.json, metrics, <scan>.info of existing or locked scans
	_ = (fs.NodeReaddirer)((*statusDir)(nil))  // the .info of every scan with a holder or waiter
	_ = (fs.NodeGetattrer)((*statusDir)(nil))  // 0555, own inode number
	_ = (fs.NodeOpener)((*statusFile)(nil))    // renders a snapshot into the handle; FOPEN_DIRECT_IO
	_ = (fs.NodeGetattrer)((*statusFile)(nil)) // 0444, size 0 like /proc
	_ = (fs.FileReader)((*snapshot)(nil))      // serves the snapshot of its open
)

// Left out on purpose (inherited from the loopback node as they are):
//
//   - Getattr, Statx, Readlink, Getxattr, Listxattr, Statfs, Access
//     (default): they read, and take no lock, so that ls and stat never
//     wait for a writer.
//   - Readdir (NodeReaddirer): go-fuse uses OpendirHandle instead.
//   - Getlk, Setlk, Setlkw: client flock/fcntl locks are handled by the
//     kernel among the mount's clients (MountOptions.EnableLocks stays
//     off); they are not forwarded to the backing files.
//   - Fsync, Lseek, Ioctl: operate on an open handle, covered by its lease.
