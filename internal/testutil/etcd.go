package testutil

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EtcdBinary is the etcd server the tests start (Debian's etcd-server;
// .ci/run installs it).
const EtcdBinary = "/usr/bin/etcd"

// Etcd is a real etcd cluster on 127.0.0.1 started by a test, with its
// members' data in the test's temporary directory. It is stopped when
// the test ends.
type Etcd struct {
	// Endpoints are the members' client URLs.
	Endpoints []string
	procs     []*exec.Cmd
	logs      []*Buffer
}

// RequireEtcd skips tb when the etcd server is missing, or fails it
// under CI=true.
func RequireEtcd(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(EtcdBinary); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s missing (apt-get install etcd-server): %v", EtcdBinary, err)
		}
		tb.Skipf("%s missing (apt-get install etcd-server)", EtcdBinary)
	}
}

// freePorts returns n TCP ports free on 127.0.0.1 right now.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// StartEtcd starts a cluster of members etcd servers and waits until it
// answers.
func StartEtcd(tb testing.TB, members int) *Etcd {
	tb.Helper()
	RequireEtcd(tb)
	ports := freePorts(tb, 2*members)
	var peers []string
	for i := range members {
		peers = append(peers, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i+1]))
	}
	e := &Etcd{}
	dir := tb.TempDir()
	for i := range members {
		client := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		cmd := exec.Command(EtcdBinary, "--name", fmt.Sprintf("m%d", i),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("m%d", i)),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", "new",
			"--heartbeat-interval", "50", "--election-timeout", "500")
		buf := &Buffer{}
		cmd.Stdout, cmd.Stderr = buf, buf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			tb.Fatalf("starting etcd: %v", err)
		}
		e.procs = append(e.procs, cmd)
		e.logs = append(e.logs, buf)
		e.Endpoints = append(e.Endpoints, client)
	}
	tb.Cleanup(e.Stop)
	e.waitHealthy(tb)
	return e
}

// waitHealthy waits until every member answers /health with true.
func (e *Etcd) waitHealthy(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, ep := range e.Endpoints {
		for {
			out, err := health(ep)
			if err == nil && strings.Contains(out, `"true"`) {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("etcd at %s not healthy after 30 s: %v %s\nlog:\n%s", ep, err, out, e.Log())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func health(ep string) (string, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(ep + "/health")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Kill kills member i with SIGKILL and waits for it.
func (e *Etcd) Kill(i int) {
	if p := e.procs[i]; p != nil && p.Process != nil {
		_ = p.Process.Kill()
		_ = p.Wait()
		e.procs[i] = nil
	}
}

// Stop kills every member.
func (e *Etcd) Stop() {
	for i := range e.procs {
		e.Kill(i)
	}
}

// Log returns what the members printed.
func (e *Etcd) Log() string {
	var b strings.Builder
	for i, l := range e.logs {
		fmt.Fprintf(&b, "--- member %d\n%s", i, l.String())
	}
	return b.String()
}
