package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
)

// target is where a workload runs: a directory the client uses, and the
// daemon serving it (nil for native).
type target struct {
	name   string // vNative, vLoopback or vScanlockfs
	root   string
	daemon *daemon
}

// bench is one run: its temporary directory, binaries, children and
// results.
type bench struct {
	cfg    config
	sel    map[int]bool
	dir    string
	src    string // SOURCE of workloads 1-6 and 8
	stderr io.Writer

	scanlockfsBin, loopbackBin, selfBin string
	// slfsMissing says why scanlockfs cannot be mounted (this checkout has
	// no mount command yet); its columns then stay empty.
	slfsMissing string
	python      string

	procs   procs
	mu      sync.Mutex
	daemons []*daemon
	cleaned sync.Once

	rep       *report
	loadStart string // the load averages when the run started
}

func run(ctx context.Context, cfg config, stdout, stderr io.Writer) (err error) {
	sel, err := cfg.workloads()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(cfg.WorkDir, "scanlockfs-bench-")
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, sel: sel, dir: dir, src: filepath.Join(dir, "src"), stderr: stderr, rep: newReport(), loadStart: loadAvg()}
	finished := make(chan struct{})
	defer close(finished)
	defer func() {
		if cerr := b.cleanup(err != nil); cerr != nil && err == nil {
			err = cerr
		}
	}()
	// A signal while the client is blocked in a FUSE call cannot cancel
	// the call: clean up from here (unmounting fails the call), and give
	// up if the run still does not return.
	go func() {
		select {
		case <-finished:
			return
		case <-ctx.Done():
		}
		fmt.Fprintln(stderr, "bench: interrupted; stopping clients and unmounting")
		_ = b.cleanup(true)
		select {
		case <-finished:
		case <-time.After(20 * time.Second):
			fmt.Fprintln(stderr, "bench: still blocked after clean-up; exiting")
			os.Exit(130)
		}
	}()

	if err := b.prepare(ctx); err != nil {
		return err
	}
	if err := b.runWorkloads(ctx); err != nil {
		return err
	}
	b.rep.machine = b.machineInfo()
	b.rep.notef("missed targets: %s", joinOr(b.rep.missed(), "none"))
	var md bytes.Buffer
	b.rep.writeMarkdown(&md)
	if _, err := stdout.Write(md.Bytes()); err != nil {
		return err
	}
	if cfg.Markdown != "" {
		if err := os.WriteFile(cfg.Markdown, md.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if cfg.CSV != "" {
		if err := b.rep.writeCSV(cfg.CSV); err != nil {
			return fmt.Errorf("write CSV: %w", err)
		}
	}
	if cfg.Plot != "" {
		if err := b.rep.plot(cfg.Plot); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
	}
	return nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench: "+format+"\n", args...)
}

// cleanup kills the clients, unmounts every daemon and removes the
// temporary directory (unless -keep; after a failure it keeps the
// daemons' logs). It runs once; later calls return nil.
func (b *bench) cleanup(failed bool) error {
	var errs []error
	b.cleaned.Do(func() {
		b.procs.killAll(false)
		b.mu.Lock()
		ds := append([]*daemon(nil), b.daemons...)
		b.mu.Unlock()
		for i := len(ds) - 1; i >= 0; i-- {
			if err := ds[i].unmount(); err != nil {
				errs = append(errs, err)
			}
		}
		b.procs.killAll(true)
		if b.cfg.Keep {
			b.logf("kept %s", b.dir)
			return
		}
		if !failed && len(errs) == 0 {
			if err := os.RemoveAll(b.dir); err != nil {
				errs = append(errs, err)
			}
			return
		}
		entries, _ := os.ReadDir(b.dir)
		for _, e := range entries {
			if e.Name() != "log" {
				_ = os.RemoveAll(filepath.Join(b.dir, e.Name()))
			}
		}
		b.logf("kept the daemons' logs in %s", filepath.Join(b.dir, "log"))
	})
	return errors.Join(errs...)
}

// prepare builds the binaries and checks the tools.
func (b *bench) prepare(ctx context.Context) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b.selfBin = self
	if _, err := exec.LookPath("fusermount3"); err != nil && os.Geteuid() != 0 {
		return errors.New("fusermount3 is missing and this is not root: install it (Debian: apt-get install fuse3)")
	}
	if err := os.MkdirAll(filepath.Join(b.dir, "bin"), 0o755); err != nil {
		return err
	}
	b.scanlockfsBin, b.loopbackBin = b.cfg.ScanlockfsBin, b.cfg.LoopbackBin
	if b.scanlockfsBin == "" || b.loopbackBin == "" {
		repo := b.cfg.Repo
		if repo == "" {
			if repo, err = findRepo(); err != nil {
				return err
			}
		}
		gobin := goTool()
		if b.scanlockfsBin == "" {
			b.scanlockfsBin = filepath.Join(b.dir, "bin", "scanlockfs")
			if err := goBuild(ctx, gobin, repo, b.scanlockfsBin, ".", b.cfg.BuildFlags); err != nil {
				return err
			}
		}
		if b.loopbackBin == "" {
			b.loopbackBin = filepath.Join(b.dir, "bin", "loopback")
			// The loopback belongs to the bench's own module.
			if err := goBuild(ctx, gobin, filepath.Join(repo, "scripts", "bench"), b.loopbackBin, "./loopback", b.cfg.BuildFlags); err != nil {
				return err
			}
		}
	}
	// A checkout without the mount command still measures native and the
	// loopback, and says so.
	if out, err := exec.CommandContext(ctx, b.scanlockfsBin, "mount", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "MOUNTPOINT") {
		b.slfsMissing = fmt.Sprintf("%s has no mount command (%v)", b.scanlockfsBin, firstLine(string(out)))
		b.logf("WARNING: %s: scanlockfs columns stay empty", b.slfsMissing)
		b.rep.notef("scanlockfs was not measured: %s", b.slfsMissing)
	}
	if p, err := exec.LookPath("python3"); err == nil {
		b.python = p
	} else if b.sel[7] {
		b.logf("WARNING: python3 not found: the Python peer column stays empty")
		b.rep.notef("python3 not found: the Python peer was not measured")
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// findRepo walks up from the working directory to the checkout whose
// go.mod declares module scanlockfs.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module scanlockfs\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the scanlockfs checkout above the working directory (use -repo)")
		}
		dir = parent
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "/usr/local/go/bin/go"
}

// goBuild builds package pkg of the module in dir as out.
func goBuild(ctx context.Context, gobin, dir, out, pkg, flags string) error {
	args := append([]string{"build", "-o", out}, strings.Fields(flags)...)
	cmd := exec.CommandContext(ctx, gobin, append(args, pkg)...)
	cmd.Dir = dir
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// runWorkloads creates the data, mounts, and runs the selected
// workloads in order.
func (b *bench) runWorkloads(ctx context.Context) error {
	if err := os.MkdirAll(b.src, 0o755); err != nil {
		return err
	}
	fsWork := b.sel[1] || b.sel[2] || b.sel[3] || b.sel[4] || b.sel[5] || b.sel[6] || b.sel[8] || b.sel[10] || b.sel[11]
	var targets []*target
	if fsWork {
		b.logf("creating data under %s", b.src)
		if err := b.createData(); err != nil {
			return fmt.Errorf("create data: %w", err)
		}
		targets = []*target{{name: vNative, root: b.src}}
		lb, err := b.mount(ctx, vLoopback, "loopback", b.src)
		if err != nil {
			return err
		}
		targets = append(targets, &target{name: vLoopback, root: lb.mnt, daemon: lb})
		lbd, err := b.mount(ctx, vLoopback, vLoopbackDefaults, b.src, "--go-fuse-defaults")
		if err != nil {
			return err
		}
		targets = append(targets, &target{name: vLoopbackDefaults, root: lbd.mnt, daemon: lbd})
		if b.slfsMissing == "" {
			sl, err := b.mount(ctx, vScanlockfs, "scanlockfs", b.src)
			if err != nil {
				return err
			}
			targets = append(targets, &target{name: vScanlockfs, root: sl.mnt, daemon: sl})
			// The baseline must mount as scanlockfs does.
			lo, err1 := mountOptions(lb.mnt)
			so, err2 := mountOptions(sl.mnt)
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			if lo != so {
				b.logf("WARNING: the loopback mounts with %q, scanlockfs with %q", lo, so)
				b.rep.notef("the loopback baseline mounted with other options than scanlockfs: %q against %q", lo, so)
			}
		}
	}
	steps := []struct {
		n   int
		run func(context.Context, []*target) error
	}{
		{1, b.workloadOpen},
		{2, b.workloadStat},
		{3, b.workloadCreate},
		{4, b.workloadSeq},
		{5, b.workloadTools},
		{6, b.workloadParallel},
		{7, func(ctx context.Context, _ []*target) error { return b.workloadLocks(ctx) }},
		{8, b.workloadWake},
		{9, func(ctx context.Context, _ []*target) error { return b.workloadMemory(ctx) }},
		{10, func(ctx context.Context, _ []*target) error { return b.workloadEtcd(ctx) }},
		{11, b.workloadPlantdb},
		{12, b.workloadFind},
		{13, b.workloadPipeline},
	}
	for _, s := range steps {
		if !b.sel[s.n] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		b.logf("workload %d", s.n)
		if err := s.run(ctx, targets); err != nil {
			return fmt.Errorf("workload %d: %w", s.n, err)
		}
		b.logf("workload %d done in %v", s.n, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// interleave runs fn for every target in every repetition, warm-ups
// first (rep < 0, not recorded), in a new random order each repetition
// so that machine noise, and whatever work a target leaves behind (an
// asynchronous RELEASE, pages being freed), hits all targets alike.
func (b *bench) interleave(ctx context.Context, targets []*target, reps, warmup int, fn func(t *target, rep int) (map[string]float64, error)) error {
	rng := rand.New(rand.NewPCG(uint64(len(targets)), uint64(reps)))
	for rep := -warmup; rep < reps; rep++ {
		order := append([]*target(nil), targets...)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, t := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			vals, err := fn(t, rep)
			if err != nil {
				return fmt.Errorf("%s, repetition %d: %w", t.name, rep, err)
			}
			if b.cfg.Verbose {
				b.logf("repetition %d on %s (%s): %v", rep, t.name, t.root, vals)
			}
			if rep < 0 {
				continue
			}
			for id, v := range vals {
				b.rep.add(id, t.name, v)
			}
		}
	}
	return nil
}

// machineInfo describes where the figures were measured.
func (b *bench) machineInfo() []string {
	var out []string
	if model, err := procfs.ReadCPUModel(); err == nil {
		out = append(out, fmt.Sprintf("CPU: %s, %d cores", model, runtime.NumCPU()))
	}
	if kib, err := procfs.ReadMemTotal(); err == nil {
		out = append(out, fmt.Sprintf("memory: %.1f GiB", float64(kib)/(1<<20)))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		out = append(out, "kernel: Linux "+unix.ByteSliceToString(u.Release[:]))
	}
	var st unix.Statfs_t
	if unix.Statfs(b.dir, &st) == nil {
		out = append(out, fmt.Sprintf("SOURCE file system: %s (under %s)", fsTypeName(st.Type), filepath.Dir(b.dir)))
	}
	// Other work on the machine shows in the load; the figures that count
	// are the ratios, measured under the same load.
	out = append(out, fmt.Sprintf("load average (1, 5, 15 min) at start: %s, at end: %s", b.loadStart, loadAvg()))
	out = append(out, "Go: "+runtime.Version()+", run as uid "+fmt.Sprint(os.Geteuid()))
	c := b.cfg
	out = append(out, fmt.Sprintf("sizes: %d files in %d scans; stat %d; readdir %d; create %d; sequential %s; tree %d × %s; parallel 4 × %d × %s; "+
		"repetitions %d (+%d warm-up), sequential %d, memory %d", c.Files, c.Scans, c.StatFiles, c.ReaddirEntries, c.CreateFiles,
		c.SeqSize.String(), c.TreeFiles, c.TreeFileSize.String(), c.ParFiles, c.ParFileSize.String(), c.Reps, c.Warmup, c.SeqReps, c.MemReps))
	out = append(out, "date: "+time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	return out
}

func loadAvg() string {
	l, err := procfs.ReadLoadavg()
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%.2f %.2f %.2f", l[0], l[1], l[2])
}

func fsTypeName(t int64) string {
	switch t {
	case 0xEF53:
		return "ext4"
	case 0x01021994:
		return "tmpfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("type %#x", t)
}
