package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The open path's checks that run only when needed.

// An open through a cached name of a file removed on SOURCE fails with
// ENOENT at once, as the lookup would have, also while another process
// holds the scan: the check runs before the open would wait. With it
// skipped, the open would wait for the holder until --timeout (EBUSY).
func TestOpenOfFileRemovedOnSourceWhileHeldFailsAtOnce(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src, "--timeout", "10s", "--entry-timeout", "1h", "--attr-timeout", "1h")
	f := filepath.Join("scanA", "gone")
	must(t, os.WriteFile(d.srcPath(f), []byte("x"), 0o644))
	run(t, "cat", d.path(f)) // the kernel caches the name
	// The holder is a peer on SOURCE, not the test process: the opener,
	// a child of the test, would act under its parent's lock.
	p := startPython(t, "plantdb peer", nil, plantdbPeer(t), "serve", src, "scanA")
	p.expect("ready")
	p.send("acquire exclusive 60000")
	p.expect("ok")
	defer func() {
		p.send("release")
		p.expect("released")
	}()
	must(t, os.Remove(d.srcPath(f)))
	got := strings.TrimSpace(run(t, "python3", "-c", coherenceReader, d.path(f)))
	if got != "ENOENT" {
		t.Errorf("open of a file removed on SOURCE while the scan is held: %s, want ENOENT", got)
	}
}
