package mountcmd

import (
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// mount(8)-style options: `-o timeout=30s,allow_other` on the command
// line, the fourth field of an /etc/fstab line, or what mount.fuse3
// passes when mount(8) mounts a "fuse.scanlockfs" file system. Each of
// our options sets the flag of the same meaning, so that the two spellings
// cannot drift apart; the options mount(8) and mount.fuse3 add on their
// own are accepted and do nothing.

// optionFlags maps each scanlockfs -o option to its flag. A bool flag
// takes the option bare ("allow_other") or with a value ("info_files=false").
var optionFlags = map[string]string{
	"timeout":     "timeout",
	"allow_other": "allow-other",
	"ro":          "read-only",
	"read_only":   "read-only",
	"info_files":  "info-files",
	"lock_dir":    "lock-dir",
	"log_level":   "log-level",
	"log_format":  "log-format",
	"log_file":    "log-file",
	"debug_fuse":  "debug-fuse",
	"recover":     "recover",
	// etcd=URL+URL...: '+' separates endpoints, ',' separates options.
	"etcd":               "etcd",
	"etcd_prefix":        "etcd-prefix",
	"etcd_ttl":           "etcd-ttl",
	"etcd_cacert":        "etcd-cacert",
	"etcd_cert":          "etcd-cert",
	"etcd_key":           "etcd-key",
	"etcd_user":          "etcd-user",
	"etcd_password_file": "etcd-password-file",
	// libfuse's names for the cache timeouts.
	"entry_timeout":    "entry-timeout",
	"attr_timeout":     "attr-timeout",
	"negative_timeout": "negative-timeout",
}

// boolOptions are the options whose flag is a switch.
var boolOptions = map[string]bool{
	"allow_other": true, "ro": true, "read_only": true, "info_files": true,
	"debug_fuse": true, "recover": true,
}

// ignoredOptions are the generic options that mount(8), mount.fuse3 and
// fstab lines carry, accepted without effect. The mount is always nosuid
// and nodev (a scan database holds neither devices nor setuid programs),
// access times are those of SOURCE's own file system, and writes are as
// synchronous as SOURCE's file system makes them.
var ignoredOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true,
	"dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true, "async": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true, "strictatime": true,
	"nostrictatime": true, "diratime": true, "nodiratime": true, "lazytime": true, "nolazytime": true,
}

// refusedOptions are generic options scanlockfs cannot honour; accepting
// them silently would promise what the mount does not do.
var refusedOptions = map[string]string{
	"noexec":       "programs on the mount can always be executed; remove noexec (or set it on SOURCE's file system)",
	"sync":         "writes go to SOURCE's file system: mount that one with sync instead",
	"dirsync":      "directory changes go to SOURCE's file system: mount that one with dirsync instead",
	"allow_root":   "use allow_other instead",
	"auto_unmount": "scanlockfs unmounts when it stops; after a crash, mount again with the recover option",
}

// flagSetting is one flag value an option sets.
type flagSetting struct {
	flag, value string
}

// parseMountOptions turns -o lists (each comma-separated) into flag
// settings, in order, so that a later option wins as in mount(8) ("rw"
// after "ro" mounts read-write). Unknown options are a usage error that
// lists the known ones.
func parseMountOptions(lists []string) ([]flagSetting, error) {
	var out []flagSetting
	allowOther, defaultPerms := false, false
	for _, list := range lists {
		for _, opt := range strings.Split(list, ",") {
			opt = strings.TrimSpace(opt)
			if opt == "" {
				continue
			}
			name, value, hasValue := strings.Cut(opt, "=")
			switch {
			case ignoredOptions[name] && !hasValue,
				strings.HasPrefix(name, "x-"), name == "comment",
				name == "fsname", name == "subtype":
				continue
			case name == "rw" && !hasValue:
				out = append(out, flagSetting{"read-only", "false"})
				continue
			case name == "default_permissions" && !hasValue:
				defaultPerms = true
				continue
			}
			if why, ok := refusedOptions[name]; ok {
				return nil, usageErrorf("mount option %q is not supported: %s", opt, why)
			}
			flag, ok := optionFlags[name]
			if !ok {
				return nil, usageErrorf("unknown mount option %q: scanlockfs knows %s; and accepts, without effect, %s",
					opt, strings.Join(sortedKeys(optionFlags), ", "), "rw, defaults, dev, suid, exec, nofail, _netdev, x-* and the atime options")
			}
			switch {
			case boolOptions[name] && !hasValue:
				value = "true"
			case boolOptions[name]:
				b, ok := parseBoolOption(value)
				if !ok {
					return nil, usageErrorf("mount option %q: want %s or %s=true|false", opt, name, name)
				}
				value = b
			case !hasValue || value == "":
				return nil, usageErrorf("mount option %q needs a value: %s=VALUE", opt, name)
			}
			if flag == "allow-other" {
				allowOther = value == "true"
			}
			out = append(out, flagSetting{flag, value})
		}
	}
	if defaultPerms && !allowOther {
		return nil, usageErrorf("mount option default_permissions: scanlockfs turns it on with allow_other, and supports it only then; add allow_other or remove default_permissions")
	}
	return out, nil
}

func parseBoolOption(v string) (string, bool) {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return "true", true
	case "0", "false", "no", "off":
		return "false", true
	}
	return "", false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// optionList collects the values of a repeated -o. (A string slice flag
// would split them on commas itself and print a clumsy help line.)
type optionList []string

func (l *optionList) Set(v string) error { *l = append(*l, v); return nil }
func (l *optionList) String() string     { return strings.Join(*l, ",") }

// applyMountOptions sets the flags that -o options name, then those of
// the trailing -o lists. The options are applied after the flags: an
// option wins over a flag given on the same command line.
func applyMountOptions(c *cli.Context, trailing []string) error {
	var lists []string
	if l, ok := c.Generic("options").(*optionList); ok {
		lists = *l
	}
	lists = append(lists, trailing...)
	settings, err := parseMountOptions(lists)
	if err != nil {
		return err
	}
	for _, s := range settings {
		if err := c.Set(s.flag, s.value); err != nil {
			return usageErrorf("mount option for --%s %q: %w", s.flag, s.value, err)
		}
	}
	return nil
}

// cacheTimeoutFlag is one of the kernel cache timeout flags.
func cacheTimeoutFlag(name string, def time.Duration, usage string) cli.Flag {
	return &cli.StringFlag{Name: name, Value: def.String(), Usage: usage}
}

// parseCacheTimeout reads the value of a cache timeout flag: a Go
// duration or a number of seconds (libfuse's entry_timeout=0.5).
func parseCacheTimeout(flag, s string) (time.Duration, error) {
	d, err := parseTimeout(s)
	if err != nil {
		return 0, usageErrorf("--%s %q: want a duration such as 100ms or 1s, or a number of seconds, not negative", flag, s)
	}
	return d, nil
}

// mountHelperArgs recognises the way mount.fuse3 starts the program of a
// "fuse.scanlockfs" mount: `scanlockfs SOURCE MOUNTPOINT [-o OPTIONS]`,
// with no command name. It returns the equivalent command line of the
// mount command, which then detaches once the mount is ready, as mount(8)
// expects of a helper. A first word that names a command, or a flag, is
// never taken for SOURCE; without -o, MOUNTPOINT must be an absolute path
// (mount(8) always passes one), so that a mistyped command stays an
// "unknown command" error.
func mountHelperArgs(args []string) ([]string, bool) {
	if len(args) != 3 && len(args) != 5 {
		return nil, false
	}
	first := args[1]
	if first == "" || strings.HasPrefix(first, "-") || isCommandName(first) {
		return nil, false
	}
	if len(args) == 3 && !filepath.IsAbs(args[2]) {
		return nil, false
	}
	if len(args) == 5 && args[3] != "-o" {
		return nil, false
	}
	out := []string{args[0], "mount", "--" + mountHelperFlag}
	if len(args) == 5 {
		out = append(out, "-o", args[4])
	}
	// "--" keeps a SOURCE or MOUNTPOINT that starts with '-' an argument.
	return append(out, "--", args[1], args[2]), true
}

func isCommandName(s string) bool {
	if s == "help" || s == "h" {
		return true
	}
	for _, c := range newCommands(nil) {
		for _, n := range c.Names() {
			if n == s {
				return true
			}
		}
	}
	return false
}

// mountOptionsHelp is the -o part of mount's --help.
const mountOptionsHelp = `Options in mount(8) style (-o, or the options field of /etc/fstab), each the same as a flag:
  timeout=D  allow_other  ro|read_only (rw undoes it)  info_files=false  lock_dir=DIR
  log_level=L  log_format=text|json  log_file=PATH  debug_fuse  recover
  entry_timeout=D  attr_timeout=D  negative_timeout=D (D: 100ms, 1s, or seconds as in libfuse: 0.5)
Accepted without effect: rw, defaults, dev, suid, exec, nodev, nosuid, auto, noauto, nofail,
_netdev, user(s), x-* (x-systemd.*), comment=, and the atime options. The mount is always
nosuid,nodev. An option wins over a flag given on the same command line.`
