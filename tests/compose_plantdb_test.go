package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"scanlockfs/tests/internal/soak"
)

// Unmodified plantdb through the mount: the plantdb-protocol peer
// (internal/testpeer/plantdb_peer.py --constructor, plantdb's
// ScanLockManager step by step) pointed at MNT.

// lockDirInodes maps the lock files in SOURCE/.locks to their inode numbers.
func lockDirInodes(t *testing.T, src string) map[string]uint64 {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(src, ".locks"))
	must(t, err)
	m := map[string]uint64{}
	for _, e := range entries {
		// Only the lock files: the daemon rewrites .info files (a new
		// inode each time) and removes them, even between ReadDir and
		// Lstat.
		if !strings.HasSuffix(e.Name(), ".lock") {
			continue
		}
		var st syscall.Stat_t
		must(t, syscall.Lstat(filepath.Join(src, ".locks", e.Name()), &st))
		m[e.Name()] = st.Ino
	}
	return m
}

// checkSameInodes fails if a file of SOURCE/.locks in before is gone or
// was replaced.
func checkSameInodes(t *testing.T, src string, before map[string]uint64) {
	t.Helper()
	after := lockDirInodes(t, src)
	for name, ino := range before {
		if after[name] != ino {
			t.Errorf("SOURCE/.locks/%s: inode %d, was %d (replaced or removed)", name, after[name], ino)
		}
	}
}

// plantdb's ScanLockManager on the mount does everything it does on a
// directory of its own (write probe, .locks, its log, stale clean-up,
// O_TRUNC open and flock of S.lock, S.info written and unlinked, S.lock
// unlinked) and its exclusive lock is the scan's real lock: SOURCE shows
// it, a plantdb on SOURCE times out, a reader of the mount waits for it,
// and the holder itself writes the scan through the mount. Its log lines
// are in the daemon's log, the status view still reads as documented,
// and no file of SOURCE/.locks is replaced or removed. Before lock files
// existed, the constructor failed with EROFS on .locks/lock_manager.log.
func TestPlantdbThroughMount(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	must(t, os.WriteFile(filepath.Join(src, "scanA", "counter"), []byte("0000000000 0000000000\n"), 0o644))
	d := mountT(t, src)
	run(t, "flock", d.path(".locks/scanA.lock"), "true") // SOURCE/.locks/scanA.lock exists now
	before := lockDirInodes(t, src)
	peer := plantdbPeer(t)

	p := startPython(t, "plantdb", nil, peer, "serve", d.mnt, "scanA", "--constructor", "--user", "plantdb-mnt")
	p.expect("ready")
	p.send("acquire exclusive 20000")
	if f := p.expect("ok"); len(f) != 3 {
		t.Fatalf("plantdb on the mount: %v", f)
	}
	if st := lockState(t, src, "scanA"); st.State != "exclusive" {
		t.Fatalf("SOURCE's view of scanA under plantdb on the mount: %s", st.State)
	}
	if pids := d.holderPIDs(t, "scanA", ".locks/scanA.lock"); !slices.Equal(pids, []int{p.pid()}) {
		t.Fatalf("holders through .locks/scanA.lock: %v, want plantdb's pid %d", pids, p.pid())
	}
	if code, out, stderr := runCode(t, "python3", peer, "hold", src, "scanA", "--timeout", "0.3"); code != 3 {
		t.Fatalf("plantdb on SOURCE under plantdb on the mount: exit %d %s %s, want 3 (timeout)", code, out, stderr)
	}
	c := startClient(t, "reader")
	c.open("r", d.path("scanA/files.json"), "r")
	d.waitQueued(t, c.pid())
	p.send("release")
	released := stamp(t, p.expect("released")[1])
	if r := c.result("r"); r.kind != "ok" || r.at < released {
		t.Fatalf("reader: %+v, want ok after plantdb released at %d", r, released)
	}
	c.close("r")
	p.send("quit")
	must(t, p.wait())

	// The holder writes the scan through the mount under its own lock.
	counter := d.path("scanA/counter")
	run(t, "python3", peer, "increment", d.mnt, "scanA", "--constructor", "-n", "3", "--counter", counter)
	if b := run(t, "cat", counter); b != "0000000003 0000000003\n" {
		t.Fatalf("counter after 3 increments by plantdb through the mount: %q", b)
	}
	checkSameInodes(t, src, before)
	log := d.stderr.String()
	for _, want := range []string{"Starting cleanup of stale locks...", "Cleaned up 0 stale lock files", "component=plantdb"} {
		if !strings.Contains(log, want) {
			t.Errorf("daemon log lacks plantdb's %q:\n%s", want, log)
		}
	}
	if doc := d.info(t, "scanA"); doc.ScanID != "scanA" {
		t.Fatalf(".locks/scanA.info after plantdb: %+v", doc)
	}
	waitFree(t, src, "scanA")
}

// The linearizability checker over plantdb peers on the mount, mixed with
// programs of the mount, lockmgr users on SOURCE and, in the first case,
// plantdb peers on SOURCE. In the second, with no plantdb on SOURCE to
// unlink its lock files, no file of SOURCE/.locks changes inode: the
// peers on the mount never touch them.
func TestPlantdbThroughMountLinearizable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		sourcePeers int
	}{{"with plantdb on SOURCE", 1}, {"inodes of SOURCE/.locks kept", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			src := scanDB(t)
			scans := []string{"scan_000", "scan_001"}
			must(t, soak.Prepare(src, scans))
			const timeout = 20 * time.Second
			d := mountT(t, src, "--timeout", timeout.String())
			for _, s := range scans {
				run(t, "flock", d.path(".locks/"+s+".lock"), "true")
			}
			before := lockDirInodes(t, src)
			cfg := soak.Config{
				Source: src, Mount: d.mnt, Scans: scans,
				MountWorkers: 3, DirectWorkers: 2, DirectGoroutines: 1,
				PlantdbPeers: tc.sourcePeers, PlantdbMountPeers: 2,
				Duration: 5 * time.Second, Timeout: timeout, Seed: uint64(time.Now().UnixNano()),
				WorkerBin: soakWorker(t), PlantdbPeer: plantdbPeer(t), LogDir: t.TempDir(), Stderr: testWriter{t},
			}
			runSoak(t, cfg)
			if tc.sourcePeers == 0 {
				checkSameInodes(t, src, before)
			}
		})
	}
}
