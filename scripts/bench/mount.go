package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const fuseSuperMagic = 0x65735546

// daemon is a mount process: scanlockfs or the plain loopback.
type daemon struct {
	label     string // e.g. "scanlockfs", "loopback-nopt"
	src, mnt  string
	p         *proc
	logPath   string
	logFile   *os.File
	unmounted bool
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
		argv = append([]string{b.loopbackBin}, flags...)
	default:
		return nil, fmt.Errorf("unknown mount kind %q", kind)
	}
	argv = append(argv, src, mnt)
	d := &daemon{label: label, src: src, mnt: mnt, logPath: filepath.Join(b.dir, "log", label+".log")}
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
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountPath(fields[4]) == dir {
			return true
		}
	}
	return false
}

// mountOptions returns the per-mount and the superblock options of the
// mount at dir from /proc/self/mountinfo.
func mountOptions(dir string) (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) > 5 && len(g) > 2 && unescapeMountPath(f[4]) == dir {
			return f[5] + " " + g[2], nil
		}
	}
	return "", fmt.Errorf("%s is not mounted", dir)
}

func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// procStatusKiB reads a "Vm..." line of /proc/PID/status in KiB.
func procStatusKiB(pid int, field string) (int64, error) {
	return procStatusKiBFile(fmt.Sprintf("/proc/%d/status", pid), field)
}

// procCPU is the user+system CPU time of all threads of pid.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticks, nil
}
