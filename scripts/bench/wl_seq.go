package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// noPassthroughFlag turns go-fuse's passthrough off in the loopback
// program, and in scanlockfs when its mount command has the flag.
const noPassthroughFlag = "--no-passthrough"

// workloadSeq is 4: sequential read and write of one big file, with
// passthrough (the default where the kernel and privileges allow it) and
// with passthrough forced off, on mounts of their own.
func (b *bench) workloadSeq(ctx context.Context, targets []*target) error {
	rp := b.rep
	rp.define(sectionFS, "4a", "sequential read, passthrough", "MiB/s", true, goal{goalVsNativeMin, 0.9}).countRequests("MiB")
	rp.define(sectionFS, "4b", "sequential write, passthrough", "MiB/s", true, goal{goalVsNativeMin, 0.9}).countRequests("MiB")
	rp.define(sectionFS, "4c", "sequential read, passthrough off", "MiB/s", true, goal{}).countRequests("MiB")
	rp.define(sectionFS, "4d", "sequential write, passthrough off", "MiB/s", true, goal{}).countRequests("MiB")

	all, unmount, err := b.seqTargets(ctx, targets)
	defer unmount()
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	order := make([]*target, len(all))
	byTarget := map[*target]*seqTarget{}
	for i, s := range all {
		order[i] = s.target
		byTarget[s.target] = s
	}
	// The file is in the page cache since it was written; without
	// passthrough the kernel drops a FUSE file's cache at each open, so
	// every repetition is alike: no warm-up.
	err = b.interleave(ctx, order, b.cfg.SeqReps, 0, func(t *target, rep int) (map[string]float64, error) {
		return b.seqOnce(byTarget[t], rep, buf)
	})
	if err != nil {
		return err
	}
	// Passthrough keeps reads and writes out of the daemon: its CPU time
	// per GiB read shows whether it was active.
	var parts []string
	for _, s := range all {
		if s.daemon != nil && s.readGiB > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f ms", s.label, float64(s.cpu.Milliseconds())/s.readGiB))
		}
	}
	sort.Strings(parts)
	rp.notef("4: daemon CPU per GiB read (near 0 = passthrough active): %s; native figures are shared by 4a-4d", strings.Join(parts, ", "))
	return nil
}

// seqTarget is a target of workload 4 and what it measured.
type seqTarget struct {
	*target
	label   string
	ids     []string // rows fed: read, write (native feeds both pairs)
	cpu     time.Duration
	readGiB float64
}

// seqTargets is targets plus mounts with passthrough off, for workload
// 4 only; unmount (never nil) takes those down again.
func (b *bench) seqTargets(ctx context.Context, targets []*target) (all []*seqTarget, unmount func(), err error) {
	var mounted []*daemon
	unmount = func() {
		for _, d := range mounted {
			d.unmount()
		}
	}
	for _, t := range targets {
		ids := []string{"4a", "4b"}
		if t.name == vNative {
			ids = []string{"4a", "4b", "4c", "4d"}
		}
		all = append(all, &seqTarget{target: t, label: t.name, ids: ids})
	}
	lb, err := b.mount(ctx, vLoopback, "loopback-nopt", b.src, noPassthroughFlag)
	if err != nil {
		return nil, unmount, err
	}
	mounted = append(mounted, lb)
	all = append(all, &seqTarget{target: &target{name: vLoopback, root: lb.mnt, daemon: lb}, label: "loopback-nopt", ids: []string{"4c", "4d"}})
	if b.slfsMissing == "" {
		sl, err := b.mount(ctx, vScanlockfs, "scanlockfs-nopt", b.src, noPassthroughFlag)
		switch {
		case err == nil:
			mounted = append(mounted, sl)
			all = append(all, &seqTarget{target: &target{name: vScanlockfs, root: sl.mnt, daemon: sl}, label: "scanlockfs-nopt", ids: []string{"4c", "4d"}})
		case exitedWithUsage(sl):
			b.rep.notef("4c/4d: scanlockfs mount has no %s flag, so passthrough cannot be forced off there", noPassthroughFlag)
		default:
			return nil, unmount, err
		}
	}
	return all, unmount, nil
}

// seqOnce reads s's big file and writes one as big (from buf), and
// returns the MiB/s of each for s's rows; rep < 0 is a warm-up.
func (b *bench) seqOnce(s *seqTarget, rep int, buf []byte) (map[string]float64, error) {
	size := int64(b.cfg.SeqSize)
	mibs := int(size >> 20)
	in := filepath.Join(s.root, seqScan, "data.bin")
	m, err := b.meter(s.target, rep)
	if err != nil {
		return nil, err
	}
	var cpu0 time.Duration
	if s.daemon != nil {
		cpu0, _ = procCPU(s.daemon.p.pid())
	}
	start := time.Now()
	fd, err := openRetry(in, unix.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", in, err)
	}
	n, err := readFull(fd, buf)
	unix.Close(fd)
	if err != nil || n != size {
		return nil, fmt.Errorf("read %s: %d of %d bytes, %v", in, n, size, err)
	}
	readT := time.Since(start)
	if s.daemon != nil && rep >= 0 {
		cpu1, _ := procCPU(s.daemon.p.pid())
		s.cpu += cpu1 - cpu0
		s.readGiB += float64(size) / (1 << 30)
	}
	if err := m.mark(s.ids[0], mibs); err != nil {
		return nil, err
	}

	out := filepath.Join(s.root, seqScan, "out_"+s.label+".bin")
	start = time.Now()
	if err := writeFile(out, size, buf); err != nil {
		return nil, err
	}
	writeT := time.Since(start)
	if err := m.mark(s.ids[1], mibs); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := statRetry(out, &st); err != nil || st.Size != size {
		return nil, fmt.Errorf("%s has %d bytes after writing %d (%v)", out, st.Size, size, err)
	}
	if err := unlinkRetry(out); err != nil {
		return nil, fmt.Errorf("unlink %s: %w", out, err)
	}
	// Let the daemon's asynchronous RELEASE free the unlinked file's
	// pages and write back what is dirty now, so that neither lands in
	// the next target's time.
	time.Sleep(100 * time.Millisecond)
	if fd, err := unix.Open(b.src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		_ = unix.Syncfs(fd)
		unix.Close(fd)
	}
	mib := float64(size) / (1 << 20)
	res := map[string]float64{}
	for i, id := range s.ids {
		d := readT
		if i%2 == 1 {
			d = writeT
		}
		res[id] = mib / d.Seconds()
	}
	return res, nil
}

// writeFile creates path with size bytes, buf repeated, and closes it.
func writeFile(path string, size int64, buf []byte) error {
	fd, err := openRetry(path, unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		chunk := buf
		if size-off < int64(len(chunk)) {
			chunk = chunk[:size-off]
		}
		if err := writeAll(fd, chunk); err != nil {
			unix.Close(fd)
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// exitedWithUsage reports whether a mount daemon exited with the usage
// error code (an unknown flag).
func exitedWithUsage(d *daemon) bool {
	if d == nil || d.p == nil {
		return false
	}
	select {
	case <-d.p.done:
	case <-time.After(2 * time.Second):
		return false
	}
	var ee *exec.ExitError
	return errors.As(d.p.err, &ee) && ee.ExitCode() == 2
}
