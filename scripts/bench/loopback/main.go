// Command loopback is the benchmark's baseline: a plain go-fuse loopback
// of SOURCE on MOUNTPOINT, without any locking, mounted with the same
// fs.Options and fuse.MountOptions as scanlockfs, so that the difference
// between the two is what locking costs.
//
//	loopback [--no-passthrough] [--allow-other] [--go-fuse-defaults] SOURCE MOUNTPOINT
//
// --go-fuse-defaults mounts with go-fuse's default options instead
// (options.go): the plain FUSE view of a directory a new user would try.
// --allow-other lets other users in with the kernel's permission checks,
// as scanlockfs --allow-other does (scripts/pjdfstest compares the two).
//
// It runs in the foreground, prints "loopback: mounted SOURCE on
// MOUNTPOINT" when the mount is ready, and unmounts on SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
)

func main() {
	noPassthrough := flag.Bool("no-passthrough", false, "serve reads and writes through the daemon instead of kernel passthrough")
	debug := flag.Bool("debug-fuse", false, "log every FUSE request")
	allowOther := flag.Bool("allow-other", false, "let other users use the mount, with default_permissions, as scanlockfs --allow-other")
	goFuseDefaults := flag.Bool("go-fuse-defaults", false, "mount with go-fuse's default options (1 s cache timeouts, passthrough) instead of scanlockfs's")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [--no-passthrough] [--allow-other] [--go-fuse-defaults] SOURCE MOUNTPOINT\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Arg(1), *noPassthrough, *allowOther, *goFuseDefaults, *debug); err != nil {
		fmt.Fprintf(os.Stderr, "loopback: %v\n", err)
		os.Exit(1)
	}
}

func run(source, mountpoint string, noPassthrough, allowOther, goFuseDefaults, debug bool) error {
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
	server, err := fs.Mount(mnt, root, opts)
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", src, mnt, err)
	}
	// fs.Mount has waited for the kernel: the mount is usable now.
	fmt.Printf("loopback: mounted %s on %s\n", src, mnt)

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
