package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/mountcmd"
)

// notifyMsg is one sd_notify datagram and the pid that sent it.
type notifyMsg struct {
	text string
	pid  int
}

// listenNotify plays systemd's side of sd_notify(3): a unixgram socket
// that receives the sender's credentials (SO_PASSCRED), as systemd checks
// them against the service's main pid.
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
	requireFUSE(t)
	sock, msgs := listenNotify(t)
	src := scanDB(t, "scanA")
	mnt := mountPoint(t)
	cmd := exec.Command(binScanlockfs, "mount", src, mnt)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
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
	waitReadyLine(t, d)

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
	requireFUSE(t)
	sock, msgs := listenNotify(t)
	src := scanDB(t, "scanA")
	mnt := mountPoint(t)
	logFile := filepath.Join(t.TempDir(), "mount.log")
	cmd := exec.Command(binScanlockfs, "mount", "--daemon", "--log-file", logFile, src, mnt)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() {
		if isMounted(mnt) {
			_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
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
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", server, fd)); err != nil || got != want {
			t.Errorf("the server's descriptor %d is %q (%v), want %s", fd, got, err, want)
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
