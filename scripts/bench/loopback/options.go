package main

import (
	"log"
	"os"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The baseline is only honest if it mounts exactly as scanlockfs does.
// These mirror fusefs.Mount (fusefs/mount.go) with scanlockfs's default
// flags: the entry and attribute timeouts of fusefs.DefaultEntryTimeout
// and DefaultAttrTimeout (1 s), no negative entries, direct mount as
// root, atomic O_TRUNC, passthrough unless disabled the same way. Only
// the name differs, so that the mounts can be told apart (fuse.loopback
// in /proc/mounts). Keep them in step with fusefs; the bench compares the
// two mounts' options in /proc/self/mountinfo and reports a difference.
// Unlike fusefs.Mount, the loopback keeps go-fuse's defaults for modes
// (no NullPermissions, the process's umask applies): they cost nothing,
// and scripts/pjdfstest compares scanlockfs's modes with a plain
// loopback's. With -go-fuse-defaults it mounts as a new user of go-fuse
// would: go-fuse's default options (1 s timeouts for entries, attributes
// and negative entries), passthrough on.
var (
	entryTimeout    = time.Second
	attrTimeout     = time.Second
	negativeTimeout = time.Duration(0)
)

func mountOptions(src string, noPassthrough, goFuseDefaults, debug bool) *fs.Options {
	l := log.New(os.Stderr, "loopback: ", log.LstdFlags)
	if goFuseDefaults {
		// fs.NewNodeFS applies its 1 s defaults only to nil Options; an
		// Options value must give them (and the baseline has a
		// 1 s negative timeout too).
		sec := time.Second
		return &fs.Options{EntryTimeout: &sec, AttrTimeout: &sec, NegativeTimeout: &sec, Logger: l,
			MountOptions: fuse.MountOptions{FsName: src, Name: "loopback", Debug: debug, Logger: l}}
	}
	opts := &fs.Options{
		EntryTimeout:    &entryTimeout,
		AttrTimeout:     &attrTimeout,
		NegativeTimeout: &negativeTimeout,
		Logger:          l,
		MountOptions: fuse.MountOptions{
			FsName:            src,
			Name:              "loopback",
			Debug:             debug,
			Logger:            l,
			DirectMount:       os.Geteuid() == 0,
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC,
		},
	}
	if noPassthrough {
		opts.MountOptions.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	}
	return opts
}
