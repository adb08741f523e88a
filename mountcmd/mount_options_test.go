package mountcmd

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseMountOptions(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		lists []string
		want  []flagSetting
	}{
		{"fstab line", []string{"timeout=30s,allow_other"},
			[]flagSetting{{"timeout", "30s"}, {"allow-other", "true"}}},
		// What mount.fuse3 passes as root for that line.
		{"through mount.fuse3", []string{"rw,timeout=30s,allow_other,dev,suid"},
			[]flagSetting{{"read-only", "false"}, {"timeout", "30s"}, {"allow-other", "true"}}},
		{"ro, then rw wins", []string{"ro,rw"},
			[]flagSetting{{"read-only", "true"}, {"read-only", "false"}}},
		{"read_only", []string{"read_only"}, []flagSetting{{"read-only", "true"}}},
		{"bool values", []string{"info_files=false,recover=yes,debug_fuse=0,allow_other=on"},
			[]flagSetting{{"info-files", "false"}, {"recover", "true"}, {"debug-fuse", "false"}, {"allow-other", "true"}}},
		{"values", []string{"lock_dir=/var/lock/db,log_level=debug,log_format=json,log_file=/var/log/s.log"},
			[]flagSetting{{"lock-dir", "/var/lock/db"}, {"log-level", "debug"}, {"log-format", "json"}, {"log-file", "/var/log/s.log"}}},
		{"repeated -o, in order", []string{"timeout=1s", "timeout=2s"},
			[]flagSetting{{"timeout", "1s"}, {"timeout", "2s"}}},
		{"generic options do nothing", []string{"defaults,auto,noauto,nofail,_netdev,user,users,nouser,exec,nodev,nosuid,async,noatime,relatime,x-systemd.automount,x-systemd.mount-timeout=30,comment=x,fsname=db,subtype=scanlockfs"},
			nil},
		{"spaces and empty items", []string{" timeout=5s ,, allow_other"},
			[]flagSetting{{"timeout", "5s"}, {"allow-other", "true"}}},
		{"default_permissions with allow_other", []string{"allow_other,default_permissions"},
			[]flagSetting{{"allow-other", "true"}}},
		{"cache timeouts, libfuse's names", []string{"entry_timeout=0.5,attr_timeout=1s,negative_timeout=0"},
			[]flagSetting{{"entry-timeout", "0.5"}, {"attr-timeout", "1s"}, {"negative-timeout", "0"}}},
		{"nothing", nil, nil},
	} {
		got, err := parseMountOptions(c.lists)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %q gives %v, want %v", c.name, c.lists, got, c.want)
		}
	}
}

func TestParseMountOptionsRefusals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		opts string
		want string
	}{
		{"bogus", `unknown mount option "bogus": scanlockfs knows allow_other,`},
		{"timeout=30s,max_read=4096", `unknown mount option "max_read=4096"`},
		{"timeout", `"timeout" needs a value: timeout=VALUE`},
		{"lock_dir=", `"lock_dir=" needs a value`},
		{"info_files=maybe", `want info_files or info_files=true|false`},
		{"noexec", `"noexec" is not supported`},
		{"sync", `mount that one with sync instead`},
		{"allow_root", `use allow_other instead`},
		{"auto_unmount", `the recover option`},
		{"default_permissions", `add allow_other or remove default_permissions`},
		{"dev=1", `unknown mount option "dev=1"`},
	} {
		_, err := parseMountOptions([]string{c.opts})
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != ExitUsage {
			t.Errorf("%q: %v, want a usage error", c.opts, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %q lacks %q", c.opts, err, c.want)
		}
	}
}

func TestMountHelperArgs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want []string // nil: not the helper form
	}{
		// mount(8) -> mount.fuse3 -> sh -c "'scanlockfs' SOURCE MOUNTPOINT -o OPTIONS"
		{[]string{"scanlockfs", "/data/db", "/mnt/db", "-o", "rw,timeout=30s,dev,suid"},
			[]string{"scanlockfs", "mount", "--mount-helper", "-o", "rw,timeout=30s,dev,suid", "--", "/data/db", "/mnt/db"}},
		{[]string{"scanlockfs", "/data/db", "/mnt/db"},
			[]string{"scanlockfs", "mount", "--mount-helper", "--", "/data/db", "/mnt/db"}},
		{[]string{"scanlockfs", "db", "/mnt/db", "-o", "ro"},
			[]string{"scanlockfs", "mount", "--mount-helper", "-o", "ro", "--", "db", "/mnt/db"}},
		// Commands, flags and typos stay what they are.
		{[]string{"scanlockfs", "status", "/data/db"}, nil},
		{[]string{"scanlockfs", "unmount", "/mnt/db"}, nil},
		{[]string{"scanlockfs", "umount", "--lazy", "/mnt/db"}, nil},
		{[]string{"scanlockfs", "cleanup", "/data/db", "-o", "x"}, nil},
		{[]string{"scanlockfs", "help", "/mnt/db"}, nil},
		{[]string{"scanlockfs", "stauts", "db"}, nil},
		{[]string{"scanlockfs", "--log-level", "/mnt/db"}, nil},
		{[]string{"scanlockfs", "/data/db", "/mnt/db", "-x", "ro"}, nil},
		{[]string{"scanlockfs", "/data/db", "/mnt/db", "-o"}, nil},
		{[]string{"scanlockfs"}, nil},
		{[]string{"scanlockfs", "version"}, nil},
	} {
		got, ok := mountHelperArgs(c.args)
		if ok != (c.want != nil) || !reflect.DeepEqual(got, c.want) {
			t.Errorf("mountHelperArgs(%q) = %q, %v; want %q", c.args, got, ok, c.want)
		}
	}
}

func TestParseCacheTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{"100ms": 100 * time.Millisecond, "0.5": 500 * time.Millisecond, "0": 0, "1h": time.Hour} {
		if got, err := parseCacheTimeout("attr-timeout", in); err != nil || got != want {
			t.Errorf("parseCacheTimeout(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1s", "soon", ""} {
		if _, err := parseCacheTimeout("entry-timeout", in); err == nil || !strings.Contains(err.Error(), "--entry-timeout") {
			t.Errorf("parseCacheTimeout(%q): %v, want an error naming --entry-timeout", in, err)
		}
	}
}
