// Package testpeer holds the lock peers that the tests and the benchmark
// run next to scanlockfs: plantdb_peer.py, a Python program that locks
// scans exactly as plantdb's ScanLockManager does (standard library only;
// its doc lists its commands), and ServeLockPeer, the same line protocol
// as plantdb_peer.py's serve command on lockmgr. It is the one copy:
// lockmgr's and the end-to-end tests run the script from this directory,
// the benchmark (another Go module) writes PlantdbPeer to a file of its
// own and runs ServeLockPeer in a helper process. Serve is the command
// loop of every Go helper process (ServeLockPeer, the end-to-end tests'
// slclient, the benchmark's reader and holder).
package testpeer

import _ "embed"

// PlantdbPeer is the text of plantdb_peer.py.
//
//go:embed plantdb_peer.py
var PlantdbPeer []byte
