package fusefs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"scanlockfs/internal/procfs"
)

// For `scanlockfs status SOURCE`: find the running mounts of SOURCE and
// read their status view, which knows the programs behind the mount's
// flocks (in /proc/locks the daemon is the only holder).

// fsType is the type of our mounts in /proc/self/mountinfo
// (MountOptions.Name "scanlockfs").
const fsType = "fuse.scanlockfs"

// FindMounts returns the mount points of the scanlockfs mounts of source
// visible to this process, from /proc/self/mountinfo.
func FindMounts(source string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return findMounts(data, source), nil
}

// findMounts parses mountinfo lines:
//
//	45 27 0:42 / /mnt/db rw,nosuid - fuse.scanlockfs /data/db rw,user_id=0
//
// The mount source is the absolute SOURCE (fusefs.Mount's FsName).
func findMounts(mountinfo []byte, source string) []string {
	want := canonicalPath(source)
	var out []string
	for _, m := range procfs.ParseMountinfo(mountinfo) {
		if m.FSType == fsType && canonicalPath(m.Source) == want {
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

// ReadMountStatus reads MOUNTPOINT/.locks/status.json of a running mount.
// A hung daemon would block the read for ever, so the read runs in its
// own goroutine and ReadMountStatus returns ctx's error when ctx ends
// first (the goroutine is then left behind until the read returns).
func ReadMountStatus(ctx context.Context, mountpoint string) (*MountStatus, error) {
	type result struct {
		data []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		data, err := os.ReadFile(filepath.Join(mountpoint, statusDirName, statusJSONName))
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
	var st MountStatus
	if err := json.Unmarshal(r.data, &st); err != nil {
		return nil, fmt.Errorf("status of the mount %s: %w", mountpoint, err)
	}
	return &st, nil
}
