package scanstatus

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"scanlockfs/internal/procfs"
)

// For `scanlockfs status SOURCE`: find the running mounts of SOURCE and
// read their status.json, which knows the programs behind the mount's
// flocks (in /proc/locks the daemon is the only holder).

const (
	// FSType is the type of scanlockfs mounts in mountinfo (go-fuse's
	// MountOptions.Name "scanlockfs").
	FSType = "fuse.scanlockfs"
	// ViewDir is the status view's directory in a mount.
	ViewDir = ".locks"
	// MountDocName is the name of the MountDoc in ViewDir.
	MountDocName = "status.json"
)

// FindMounts returns the mount points of the scanlockfs mounts of source
// visible to this process.
func FindMounts(source string) ([]string, error) {
	ms, err := procfs.ReadMountinfo()
	if err != nil {
		return nil, err
	}
	return mountsOf(ms, source), nil
}

// mountsOf picks the scanlockfs mounts of source: their mount source is
// the absolute SOURCE (fusefs.Mount's FsName).
func mountsOf(ms []procfs.Mount, source string) []string {
	want := canonicalPath(source)
	var out []string
	for _, m := range ms {
		if m.FSType == FSType && canonicalPath(m.Source) == want {
			out = append(out, m.MountPoint)
		}
	}
	return out
}

// canonicalPath makes two names of one directory compare equal where it
// can: absolute, without symbolic links.
func canonicalPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	return p
}

// ReadMount reads MOUNTPOINT/.locks/status.json of a running mount. A
// hung daemon would block the read for ever, so the read runs in its own
// goroutine and ReadMount returns ctx's error when ctx ends first (the
// goroutine is then left behind until the read returns).
func ReadMount(ctx context.Context, mountpoint string) (*MountDoc, error) {
	type result struct {
		data []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		data, err := os.ReadFile(filepath.Join(mountpoint, ViewDir, MountDocName))
		ch <- result{data, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return nil, fmt.Errorf("reading the status of the mount %s: %w", mountpoint, ctx.Err())
	}
	if r.err != nil {
		return nil, r.err
	}
	var doc MountDoc
	if err := json.Unmarshal(r.data, &doc); err != nil {
		return nil, fmt.Errorf("status of the mount %s: %w", mountpoint, err)
	}
	return &doc, nil
}
