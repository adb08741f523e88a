package tests

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
	"scanlockfs/mountcmd"
)

// repoRoot is the directory of the repository (scripts/ lives there).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Dir(filepath.Dir(file))
}

// scripts/install writes the unit template and an environment file for a
// mount point; the unit passes systemd-analyze verify, and its command
// lines, with the variables of that file, give a service that is ready
// (READY=1) once it serves, comes back after a SIGKILL (what
// Restart=on-failure does: the same ExecStart, whose --recover clears the
// dead mount), and stops cleanly through ExecStop. No systemd runs here:
// the test replays the unit's ExecStart and ExecStop lines the way systemd
// expands them (%f, ${VAR} as one word, $VAR split on spaces).
func TestServiceUnitLifecycle(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	if _, err := exec.LookPath("systemd-escape"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: systemd-escape is missing (package systemd)")
		}
		t.Skip("systemd-escape is missing (package systemd)")
	}
	src := scanDB(t, "scanA")
	mnt := filepath.Join(t.TempDir(), "scan-db")
	dest := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "install"), src, mnt, "timeout=5s,info_files=false")
	cmd.Env = append(os.Environ(), "DESTDIR="+dest, "SCANLOCKFS_BIN="+binScanlockfs)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/install: %v\n%s", err, out)
	} else if !strings.Contains(string(out), " fuse.scanlockfs timeout=5s,info_files=false,nofail 0 0") {
		t.Errorf("scripts/install does not print the fstab line:\n%s", out)
	}
	must(t, os.Mkdir(mnt, 0o755))

	instance := strings.TrimSpace(run(t, "systemd-escape", "--path", mnt))
	if back := strings.TrimSpace(run(t, "systemd-escape", "--unescape", "--path", instance)); back != mnt {
		t.Fatalf("%%f of instance %q is %q, want %s", instance, back, mnt)
	}
	env := readEnvFile(t, filepath.Join(dest, "etc/scanlockfs", instance+".env"))
	if env["SOURCE"] != src || env["OPTIONS"] != "-o timeout=5s,info_files=false" {
		t.Fatalf("environment file: %q", env)
	}
	unit := filepath.Join(dest, "etc/systemd/system/scanlockfs@.service")
	verifyUnit(t, unit, instance, filepath.Join(dest, "usr/local/bin"))
	start, stop := unitCommand(t, unit, "ExecStart", env, mnt, dest), unitCommand(t, unit, "ExecStop", env, mnt, dest)

	sock, msgs := listenNotify(t)
	startService := func() *daemon {
		t.Helper()
		cmd := exec.Command(start[0], start[1:]...)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
		d := startCmd(t, cmd, src, mnt)
		t.Cleanup(d.cleanup)
		if m := nextNotify(t, msgs); m.text != "READY=1" || m.pid != d.cmd.Process.Pid {
			t.Fatalf("%q from pid %d, want READY=1 from %d\nstderr: %s", m.text, m.pid, d.cmd.Process.Pid, d.stderr)
		}
		if got := run(t, "cat", filepath.Join(mnt, "scanA/files.json")); got != "files of scanA\n" {
			t.Fatalf("cat after READY=1: %q", got)
		}
		return d
	}

	first := startService()
	if !strings.Contains(first.stderr.String(), "info_files=false") || !strings.Contains(first.stderr.String(), "timeout=5s") {
		t.Errorf("the OPTIONS of the environment file did not arrive:\n%s", first.stderr)
	}
	killServer(t, first)

	second := startService()
	if !strings.Contains(second.stderr.String(), "unmounted a dead mount") {
		t.Errorf("the restarted service did not clear the dead mount:\n%s", second.stderr)
	}

	second.allowExit = true
	run(t, stop[0], stop[1:]...)
	if m := nextNotify(t, msgs); m.text != "STOPPING=1" || m.pid != second.cmd.Process.Pid {
		t.Fatalf("after ExecStop: %q from pid %d, want STOPPING=1", m.text, m.pid)
	}
	if code := second.waitExit(t); code != mountcmd.ExitOK {
		t.Fatalf("the service exited %d after ExecStop\n%s", code, second.stderr)
	}
}

// readEnvFile reads a systemd EnvironmentFile of KEY=VALUE and KEY="VALUE" lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		env[k] = strings.Trim(v, `"`)
	}
	must(t, sc.Err())
	return env
}

// unitCommand returns the argv of the unit's KEY= line (ExecStart,
// ExecStop) as systemd builds it: %f is the mount point, ${VAR} one word,
// $VAR split on white space; /usr/local/bin is DESTDIR's.
func unitCommand(t *testing.T, unit, key string, env map[string]string, mnt, dest string) []string {
	t.Helper()
	b, err := os.ReadFile(unit)
	must(t, err)
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key+"=") {
			if line != "" {
				t.Fatalf("%s: two %s= lines", unit, key)
			}
			line = strings.TrimLeft(strings.TrimPrefix(l, key+"="), "-") // "-": failure is ignored
		}
	}
	if line == "" {
		t.Fatalf("%s: no %s= line", unit, key)
	}
	var argv []string
	for _, w := range strings.Fields(line) {
		switch {
		case strings.HasPrefix(w, "${") && strings.HasSuffix(w, "}"):
			argv = append(argv, env[w[2:len(w)-1]])
		case strings.HasPrefix(w, "$"):
			argv = append(argv, strings.Fields(env[w[1:]])...)
		default:
			w = strings.ReplaceAll(w, "%f", mnt)
			if strings.ContainsAny(w, "%$") {
				t.Fatalf("%s: %s= uses %q, which this test does not expand", unit, key, w)
			}
			argv = append(argv, w)
		}
	}
	if !strings.HasPrefix(argv[0], "/usr/local/bin/") {
		t.Fatalf("%s: %s= runs %s, not the installed /usr/local/bin/scanlockfs", unit, key, argv[0])
	}
	argv[0] = filepath.Join(dest, argv[0])
	return argv
}

// verifyUnit runs systemd-analyze verify on an instance of the template,
// with the installed binary as /usr/local/bin/scanlockfs (bind-mounted in
// a private mount namespace, so the machine is left alone: verify checks
// that the commands exist).
func verifyUnit(t *testing.T, unit, instance, bindir string) {
	t.Helper()
	for _, p := range []string{"systemd-analyze", "unshare"} {
		if _, err := exec.LookPath(p); err != nil || os.Geteuid() != 0 {
			t.Logf("the unit is not verified: needs root and %s", p)
			return
		}
	}
	dir := t.TempDir()
	must(t, os.Symlink(unit, filepath.Join(dir, "scanlockfs@.service")))
	inst := filepath.Join(dir, "scanlockfs@"+instance+".service")
	must(t, os.Symlink("scanlockfs@.service", inst))
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /usr/local/bin && exec systemd-analyze verify "$2"`, "sh", bindir, inst)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// notifyMsg is one sd_notify datagram and the pid that sent it.
type notifyMsg struct {
	text string
	pid  int
}

// listenNotify plays systemd's side of sd_notify(3): a unixgram socket
// that receives the sender's credentials (SO_PASSCRED), as systemd checks
// them against the service's main pid.
// notifyMount prepares `scanlockfs mount args... SRC MNT` on a new scan
// database with scanA, with NOTIFY_SOCKET set to a socket of the test;
// msgs has what arrives there.
func notifyMount(t *testing.T, args ...string) (cmd *exec.Cmd, msgs <-chan notifyMsg, src, mnt string) {
	t.Helper()
	requireFUSE(t)
	sock, msgs := listenNotify(t)
	src, mnt = scanDB(t, "scanA"), mountPoint(t)
	cmd = exec.Command(binScanlockfs, append(append([]string{"mount"}, args...), src, mnt)...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	return cmd, msgs, src, mnt
}

func listenNotify(t *testing.T) (string, <-chan notifyMsg) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	raw, err := conn.SyscallConn()
	must(t, err)
	var serr error
	must(t, raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) }))
	must(t, serr)
	msgs := make(chan notifyMsg, 16)
	go func() {
		defer close(msgs)
		for {
			buf, oob := make([]byte, 4096), make([]byte, 1024)
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			m := notifyMsg{text: string(buf[:n])}
			if scms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, scm := range scms {
					if cred, err := unix.ParseUnixCredentials(&scm); err == nil {
						m.pid = int(cred.Pid)
					}
				}
			}
			msgs <- m
		}
	}()
	return path, msgs
}

func nextNotify(t *testing.T, msgs <-chan notifyMsg) notifyMsg {
	t.Helper()
	select {
	case m, ok := <-msgs:
		if !ok {
			t.Fatal("notify socket closed")
		}
		return m
	case <-time.After(waitLimit):
		t.Fatal("no sd_notify message")
	}
	return notifyMsg{}
}

// With NOTIFY_SOCKET set (systemd Type=notify), mount sends READY=1 from
// its own pid once the mount serves, as well as the readiness line, and
// STOPPING=1 when it is unmounted; then it exits 0.
func TestNotifyReadyAndStopping(t *testing.T) {
	t.Parallel()
	cmd, msgs, src, mnt := notifyMount(t)
	d := startCmd(t, cmd, src, mnt)
	t.Cleanup(d.cleanup)

	m := nextNotify(t, msgs)
	if m.text != "READY=1" || m.pid != d.cmd.Process.Pid {
		t.Fatalf("first message %q from pid %d, want READY=1 from %d", m.text, m.pid, d.cmd.Process.Pid)
	}
	// Usable at once: mounted, announced, and serving.
	if !isMounted(mnt) {
		t.Fatal("READY=1 before the mount is in the mount table")
	}
	if got := run(t, "cat", filepath.Join(mnt, "scanA/files.json")); got != "files of scanA\n" {
		t.Fatalf("cat right after READY=1: %q", got)
	}
	// The line is written before READY=1 is sent; it reaches the test
	// through a pipe and a copying goroutine, so it may still be on its way.
	d.waitReadyLine(t)

	d.allowExit = true
	run(t, binScanlockfs, "unmount", mnt)
	if m := nextNotify(t, msgs); m.text != "STOPPING=1" || m.pid != d.cmd.Process.Pid {
		t.Fatalf("after unmount: %q from pid %d, want STOPPING=1 from %d", m.text, m.pid, d.cmd.Process.Pid)
	}
	if code := d.waitExit(t); code != mountcmd.ExitOK {
		t.Fatalf("exit %d after a clean unmount\n%s", code, d.stderr)
	}
}

// With --daemon, the foreground process sends READY=1 with MAINPID= of
// the background server once the mount serves, then exits 0; the server
// (now the service's main process) sends STOPPING=1 when unmounted.
func TestNotifyWithDaemonNamesTheServer(t *testing.T) {
	t.Parallel()
	logFile := filepath.Join(t.TempDir(), "mount.log")
	cmd, msgs, src, mnt := notifyMount(t, "--daemon", "--log-file", logFile)
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() {
		if isMounted(mnt) {
			detachMount(mnt)
		}
	})
	if err != nil {
		t.Fatalf("mount --daemon: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("scanlockfs: mounted %s on %s\n", src, mnt); string(out) != want {
		t.Fatalf("output %q, want %q", out, want)
	}
	m := nextNotify(t, msgs)
	var server int
	if _, err := fmt.Sscanf(m.text, "READY=1\nMAINPID=%d", &server); err != nil || m.pid != cmd.Process.Pid {
		t.Fatalf("message %q from pid %d, want READY=1 and MAINPID from %d", m.text, m.pid, cmd.Process.Pid)
	}
	if server == cmd.Process.Pid {
		t.Fatalf("MAINPID is the foreground process %d", server)
	}
	// The server holds none of the caller's pipes or terminal.
	for fd, want := range map[int]string{0: "/dev/null", 1: "/dev/null", 2: logFile} {
		if got, err := procfs.ReadFD(server, fd); err != nil || got.Link() != want {
			t.Errorf("the server's descriptor %d is %q (%v), want %s", fd, got.Link(), err, want)
		}
	}
	if sid, err := unix.Getsid(server); err != nil || sid != server {
		t.Fatalf("the server %d does not lead its own session (sid %d, %v)", server, sid, err)
	}
	if got := run(t, "cat", filepath.Join(mnt, "scanA/files.json")); got != "files of scanA\n" {
		t.Fatalf("cat after mount --daemon returned: %q", got)
	}

	run(t, binScanlockfs, "unmount", mnt)
	if m := nextNotify(t, msgs); m.text != "STOPPING=1" || m.pid != server {
		t.Fatalf("after unmount: %q from pid %d, want STOPPING=1 from the server %d", m.text, m.pid, server)
	}
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(logFile); strings.Contains(string(b), "every scan lock released") {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("the server did not stop cleanly:\n%s", b)
		}
	}
}

// requireMountHelper skips t unless mount(8) can run scanlockfs here the
// way it does at boot: as root, with mount.fuse3 and unshare(1) (the test
// installs scanlockfs as /usr/local/bin/scanlockfs inside a private mount
// namespace, leaving the machine's own /usr/local/bin alone). Under CI it
// fails instead.
func requireMountHelper(t *testing.T) {
	t.Helper()
	requireFUSE(t)
	why := ""
	if os.Geteuid() != 0 {
		why = "mount(8) with fstab lines needs root"
	}
	for _, p := range []string{"mount", "umount", "unshare", "findmnt", "/sbin/mount.fuse3"} {
		if _, err := exec.LookPath(p); err != nil && why == "" {
			why = p + " is missing (packages mount, util-linux, fuse3)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", why)
	}
	t.Skip(why)
}

// An fstab line `SOURCE MOUNTPOINT fuse.scanlockfs OPTIONS 0 0` and
// `mount -t fuse.scanlockfs -o OPTIONS SOURCE MOUNTPOINT` work through
// the real mount(8) and mount.fuse3, which run `scanlockfs SOURCE
// MOUNTPOINT -o OPTIONS` from PATH: mount returns once the mount serves
// (the next command reads through it), the options arrive, umount(8) and
// `scanlockfs unmount` stop the server, and a bad option (or mount.fuse3's
// drop_privileges, which scanlockfs does not support) fails mount(8) with
// scanlockfs's message.
func TestFstabLineMountsThroughMountFuse3(t *testing.T) {
	t.Parallel()
	requireMountHelper(t)
	src := scanDB(t, "scanA")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	fstab := filepath.Join(dir, "fstab")
	log1, log2 := filepath.Join(dir, "cmdline.log"), filepath.Join(dir, "fstab.log")
	must(t, os.WriteFile(fstab, []byte("# test fstab\n"+src+" "+mnt+
		" fuse.scanlockfs timeout=30s,allow_other,info_files=false,log_file="+log2+",nofail,_netdev,x-systemd.automount 0 0\n"), 0o644))

	// The mount namespace is private: nothing done in it reaches the host,
	// and the trap detaches the mount if a step fails, so that the server
	// exits.
	script := `set -eu
trap 'umount -l "$MNT" 2>/dev/null || true' EXIT
mount --bind "$BINDIR" /usr/local/bin
waitlog() { for i in $(seq 1000); do grep -q "every scan lock released" "$1" && return 0; sleep 0.01; done; echo "no clean stop in $1" >&2; return 1; }

mount -t fuse.scanlockfs -o timeout=5s,log_file="$LOG1" "$SRC" "$MNT"
echo "cmdline: $(findmnt -n -o FSTYPE,SOURCE "$MNT")"
echo "read: $(cat "$MNT/scanA/files.json")"
scanlockfs unmount "$MNT"
waitlog "$LOG1"

mount -T "$FSTAB" "$MNT"
echo "fstab: $(findmnt -n -o FSTYPE,SOURCE,OPTIONS "$MNT")"
echo "read: $(cat "$MNT/scanA/files.json")"
umount "$MNT"
waitlog "$LOG2"

if mount -t fuse.scanlockfs -o timeout=5s,bogus "$SRC" "$MNT" 2>err; then echo "bad option mounted" >&2; exit 1; fi
echo "refused: $(cat err)"
if mount -t fuse.scanlockfs -o drop_privileges "$SRC" "$MNT" 2>err; then echo "drop_privileges mounted" >&2; exit 1; fi
echo "refused: $(cat err)"
# mount.fuse3 mounted before it ran scanlockfs: a dead mount is left.
if findmnt "$MNT" >/dev/null; then scanlockfs unmount "$MNT"; fi
if findmnt "$MNT" >/dev/null; then echo "still mounted" >&2; exit 1; fi
echo done
`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BINDIR="+filepath.Dir(binScanlockfs), "SRC="+src, "MNT="+mnt,
		"FSTAB="+fstab, "LOG1="+log1, "LOG2="+log2)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{
		"cmdline: fuse.scanlockfs " + src + "\n",
		"fstab: fuse.scanlockfs " + src + " ",
		"read: files of scanA\n",
		`refused: scanlockfs: unknown mount option "bogus"`,
		"refused: scanlockfs: MOUNTPOINT /dev/fd/",
		"remove drop_privileges from the mount options",
		"done\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "read: files of scanA\n") != 2 {
		t.Errorf("not both mounts served the file:\n%s", got)
	}
	for _, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(line, "fstab: ") && !strings.Contains(line, "allow_other") {
			t.Errorf("the fstab options did not arrive: %s", line)
		}
	}
	b1, _ := os.ReadFile(log1)
	b2, _ := os.ReadFile(log2)
	if !strings.Contains(string(b1), "timeout=5s") || !strings.Contains(string(b2), "info_files=false") {
		t.Errorf("the options did not reach the servers:\n%s\n%s", b1, b2)
	}
}
