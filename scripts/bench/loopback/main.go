// Command loopback is the benchmark's baseline: a plain go-fuse loopback
// of SOURCE on MOUNTPOINT, without any locking, mounted with the same
// fs.Options and fuse.MountOptions as scanlockfs, so that the difference
// between the two is what locking costs.
//
//	loopback [--no-passthrough] [--allow-other] [--go-fuse-defaults] [--count-requests] SOURCE MOUNTPOINT
//
// --go-fuse-defaults mounts with go-fuse's default options instead
// (options.go): the plain FUSE view of a directory a new user would try.
// --allow-other lets other users in with the kernel's permission checks,
// as scanlockfs --allow-other does (scripts/pjdfstest compares the two).
//
// Every FUSE request is counted by opcode, with scanlockfs's own counter
// (fusefs.CountRequests), so that both pay the same for it. With
// --count-requests the loopback answers each line "requests" on stdin
// with one line "requests OP=N ..." (the opcodes counted so far, sorted)
// on stdout: the bench reads the counts without a request of its own on
// the mount (scanlockfs shows them in .locks/metrics).
//
// It runs in the foreground, prints "loopback: mounted SOURCE on
// MOUNTPOINT" when the mount is ready, and unmounts on SIGINT or SIGTERM.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"scanlockfs/fusefs"
)

func main() {
	noPassthrough := flag.Bool("no-passthrough", false, "serve reads and writes through the daemon instead of kernel passthrough")
	debug := flag.Bool("debug-fuse", false, "log every FUSE request")
	allowOther := flag.Bool("allow-other", false, "let other users use the mount, with default_permissions, as scanlockfs --allow-other")
	goFuseDefaults := flag.Bool("go-fuse-defaults", false, "mount with go-fuse's default options (1 s cache timeouts, passthrough) instead of scanlockfs's")
	countRequests := flag.Bool("count-requests", false, `answer each line "requests" on stdin with the FUSE requests counted so far by opcode`)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [--no-passthrough] [--allow-other] [--go-fuse-defaults] [--count-requests] SOURCE MOUNTPOINT\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Arg(1), *noPassthrough, *allowOther, *goFuseDefaults, *countRequests, *debug); err != nil {
		fmt.Fprintf(os.Stderr, "loopback: %v\n", err)
		os.Exit(1)
	}
}

func run(source, mountpoint string, noPassthrough, allowOther, goFuseDefaults, countRequests, debug bool) error {
	src, err := filepath.Abs(source)
	if err != nil {
		return err
	}
	mnt, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	root, err := fs.NewLoopbackRoot(src)
	if err != nil {
		return err
	}
	opts := mountOptions(src, noPassthrough, goFuseDefaults, debug)
	if allowOther {
		opts.MountOptions.AllowOther = true
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	// fs.Mount, with the requests counted as fusefs.Mount counts them.
	raw, counts := fusefs.CountRequests(fs.NewNodeFS(root, opts))
	server, err := fuse.NewServer(raw, mnt, &opts.MountOptions)
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", src, mnt, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return fmt.Errorf("mount %s on %s: %w", src, mnt, err)
	}
	// The kernel has the mount: it is usable now.
	fmt.Printf("loopback: mounted %s on %s\n", src, mnt)
	if countRequests {
		go answerRequests(counts)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-sigs:
	}
	// Unmount can fail with EBUSY while the kernel still releases
	// handles: retry for a while.
	var uerr error
	for i := 0; i < 50; i++ {
		if uerr = server.Unmount(); uerr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if uerr != nil {
		return fmt.Errorf("unmount %s: %w", mnt, uerr)
	}
	<-done
	return nil
}

// answerRequests answers each line "requests" on stdin with the counts
// by opcode, until stdin ends.
func answerRequests(counts func() map[string]uint64) {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "requests" {
			fmt.Fprintf(os.Stderr, "loopback: unknown command %q on stdin\n", sc.Text())
			continue
		}
		m := counts()
		var b strings.Builder
		b.WriteString("requests")
		for _, op := range slices.Sorted(maps.Keys(m)) {
			if m[op] > 0 {
				fmt.Fprintf(&b, " %s=%d", op, m[op])
			}
		}
		fmt.Println(b.String())
	}
}
