package mountcmd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The mount lifecycle driven without the command line: StartMount,
// Serve with a channel standing in for the signals, Shutdown and Wait.
// The programs using the mount run in other processes.

// startTestMount mounts a new scan database (scan_001/data) and unmounts
// it at the end of the test if the test has not.
func startTestMount(t *testing.T) *Mount {
	t.Helper()
	requireFUSE(t)
	db := newDB(t)
	must(t, os.WriteFile(filepath.Join(db, "scan_001", "data"), []byte("scan data\n"), 0o644))
	mnt := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	m, err := StartMount(context.Background(), Config{Source: db, Mountpoint: mnt, Timeout: 10 * time.Second, InfoFiles: true})
	if err != nil {
		t.Fatalf("StartMount: %v", err)
	}
	t.Cleanup(func() {
		if isMountPoint(t, m.Mountpoint) {
			_ = exec.Command("fusermount3", "-uz", m.Mountpoint).Run()
		}
	})
	return m
}

// flockBusy reports whether an exclusive flock(1) of the lock file of
// scan_001 fails at once, that is whether somebody holds the scan.
func flockBusy(t *testing.T, m *Mount) bool {
	t.Helper()
	err := exec.Command("flock", "-n", "-x", filepath.Join(m.Source, ".locks", "scan_001.lock"), "true").Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return true
	}
	must(t, err)
	return false
}

func TestMountLifecycleShutdown(t *testing.T) {
	m := startTestMount(t)
	if !isMountPoint(t, m.Mountpoint) {
		t.Fatalf("%s is not a mount point after StartMount", m.Mountpoint)
	}
	out, err := exec.Command("cat", filepath.Join(m.Mountpoint, "scan_001", "data")).Output()
	if err != nil || string(out) != "scan data\n" {
		t.Fatalf("cat through the mount: %q, %v", out, err)
	}
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case <-m.Done():
	default:
		t.Fatal("Shutdown returned before the server stopped")
	}
	if err := m.Wait(); err != nil {
		t.Fatalf("Wait after Shutdown: %v", err)
	}
	if isMountPoint(t, m.Mountpoint) {
		t.Fatalf("%s is still mounted after Shutdown", m.Mountpoint)
	}
}

// TestMountServeSecondSignalStops: on a first signal with a file open,
// the mount is detached but the file keeps its lock; a second signal
// stops at once with ExitMount and releases the lock.
func TestMountServeSecondSignalStops(t *testing.T) {
	m := startTestMount(t)
	marker := filepath.Join(t.TempDir(), "held")
	holder := startBg(t, exec.Command("sh", "-c", `exec 3<"$1" && : >"$2" && exec sleep 600`, "sh",
		filepath.Join(m.Mountpoint, "scan_001", "data"), marker))
	waitForFile(t, marker, holder)
	if !flockBusy(t, m) {
		t.Fatal("scan_001 is free while a program has a file of it open through the mount")
	}

	sigs := make(chan os.Signal, 2)
	served := make(chan error, 1)
	go func() { served <- m.Serve(sigs) }()
	sigs <- syscall.SIGTERM
	// Detached (lazily unmounted) once the retries gave up.
	deadline := time.Now().Add(30 * time.Second)
	for isMountPoint(t, m.Mountpoint) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still mounted 30s after the first signal", m.Mountpoint)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v after one signal while a file was open", err)
	default:
	}
	if !flockBusy(t, m) {
		t.Fatal("scan_001 was released on the first signal while its file is still open")
	}

	sigs <- syscall.SIGTERM
	var err error
	select {
	case err = <-served:
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after a second signal")
	}
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() != ExitMount {
		t.Fatalf("Serve after a second signal: %v, want exit code ExitMount (%d)", err, ExitMount)
	}
	if flockBusy(t, m) {
		t.Fatal("scan_001 still held after the mount stopped")
	}
	if err := m.Wait(); err != nil {
		t.Fatalf("Wait after a forced stop: %v", err)
	}
	// Closing the file lets the kernel finish the detached unmount.
	_ = syscall.Kill(-holder.cmd.Process.Pid, syscall.SIGKILL)
	holder.wait(20 * time.Second)
	select {
	case <-m.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop after the last file of the detached mount was closed")
	}
}
