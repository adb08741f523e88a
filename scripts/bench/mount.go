package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
)

const fuseSuperMagic = 0x65735546

// daemon is a mount process: scanlockfs or the plain loopback.
type daemon struct {
	label     string // e.g. "scanlockfs", "loopback-nopt"
	kind      string // vScanlockfs or vLoopback
	src, mnt  string
	p         *proc
	logPath   string
	logFile   *os.File
	unmounted bool
	// counter reads the daemon's FUSE request counters (requests.go);
	// counterOf sets it up at first use.
	counter      *reqCounter
	counterTried bool
}

// mount starts a FUSE server in its own process and waits for the line
// it prints when the mount is ready: "scanlockfs: mounted SOURCE on
// MOUNTPOINT" (the loopback program prints the same with "loopback").
// When the daemon was started but did not get ready, it is returned with
// the error (cleanup unmounts it either way).
func (b *bench) mount(ctx context.Context, kind, label, src string, flags ...string) (*daemon, error) {
	mnt := filepath.Join(b.dir, "mnt", label)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	var argv []string
	switch kind {
	case vScanlockfs:
		argv = append([]string{b.scanlockfsBin, "mount"}, flags...)
	case vLoopback:
		// It counts its requests like scanlockfs; the bench reads them on
		// its stdin.
		argv = append([]string{b.loopbackBin, "--count-requests"}, flags...)
	default:
		return nil, fmt.Errorf("unknown mount kind %q", kind)
	}
	argv = append(argv, src, mnt)
	d := &daemon{label: label, kind: kind, src: src, mnt: mnt, logPath: filepath.Join(b.dir, "log", label+".log")}
	if err := os.MkdirAll(filepath.Dir(d.logPath), 0o755); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	d.logFile = lf
	p, err := b.procs.start(label, argv, nil, lf, true)
	if err != nil {
		lf.Close()
		return nil, err
	}
	d.p = p
	b.addDaemon(d)
	want := kind + ": mounted "
	deadline := time.Now().Add(b.cfg.MountTimeout)
	for {
		f, err := p.expect(ctx, time.Until(deadline), kind+":")
		if err != nil {
			return d, fmt.Errorf("mount %s (%s): %w (log: %s)", label, strings.Join(argv, " "), err, d.logPath)
		}
		if strings.HasPrefix(strings.Join(f, " "), want) {
			break
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil || st.Type != fuseSuperMagic {
		return d, fmt.Errorf("mount %s said it is ready, but %s is not a FUSE mount (statfs: %v, type %#x)", label, mnt, err, st.Type)
	}
	return d, nil
}

func (b *bench) addDaemon(d *daemon) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.daemons = append(b.daemons, d)
}

// unmount stops the server with SIGTERM (a clean unmount) and makes sure
// the mount point is gone: fusermount3 -u with retries (unmount can
// return EBUSY while the kernel still releases handles), then a lazy
// unmount as the last resort.
func (d *daemon) unmount() error {
	if d.unmounted {
		return nil
	}
	d.unmounted = true
	if d.counter != nil {
		d.counter.close() // a held .locks/metrics would keep the mount busy
	}
	var errs []string
	if d.p.cmd.Process != nil {
		_ = d.p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-d.p.done:
		if d.p.err != nil {
			errs = append(errs, fmt.Sprintf("%s exited with %v after SIGTERM", d.label, d.p.err))
		}
	case <-time.After(15 * time.Second):
		errs = append(errs, d.label+" did not exit within 15s of SIGTERM")
	}
	for i := 0; i < 10 && isMounted(d.mnt); i++ {
		_ = exec.Command("fusermount3", "-u", d.mnt).Run()
		if isMounted(d.mnt) {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if isMounted(d.mnt) {
		errs = append(errs, d.mnt+" still mounted; lazy unmount")
		if err := exec.Command("fusermount3", "-uz", d.mnt).Run(); err != nil {
			_ = unix.Unmount(d.mnt, unix.MNT_DETACH)
		}
	}
	select {
	case <-d.p.done:
	default:
		d.p.kill()
		<-d.p.done
	}
	d.logFile.Close()
	if len(errs) > 0 {
		return fmt.Errorf("unmount %s: %s (log: %s)%s", d.label, strings.Join(errs, "; "), d.logPath, d.p.tail.suffix())
	}
	return nil
}

// isMounted reports whether dir is a mount point in this namespace.
func isMounted(dir string) bool {
	_, ok := mountAt(dir)
	return ok
}

// mountOptions returns the per-mount and the superblock options of the
// mount at dir from /proc/self/mountinfo.
func mountOptions(dir string) (string, error) {
	m, ok := mountAt(dir)
	if !ok {
		return "", fmt.Errorf("%s is not mounted", dir)
	}
	return m.Options + " " + m.SuperOptions, nil
}

// mountAt returns the mount on dir (the first listed).
func mountAt(dir string) (procfs.Mount, bool) {
	ms, err := procfs.ReadMountinfo()
	if err != nil {
		return procfs.Mount{}, false
	}
	for _, m := range ms {
		if m.MountPoint == dir {
			return m, true
		}
	}
	return procfs.Mount{}, false
}

// procStatusKiB reads VmRSS or VmHWM of /proc/PID/status in KiB.
func procStatusKiB(pid int, field string) (int64, error) {
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		return 0, err
	}
	switch field {
	case "VmRSS":
		return int64(st.VmRSS), nil
	case "VmHWM":
		return int64(st.VmHWM), nil
	}
	return 0, fmt.Errorf("procStatusKiB: no field %s", field)
}

// procCPU is the user+system CPU time of all threads of pid.
func procCPU(pid int) (time.Duration, error) {
	st, err := procfs.ReadStat(pid)
	if err != nil {
		return 0, err
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(st.UTime+st.STime) * time.Second / ticks, nil
}
