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

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
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
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// StartEtcd starts a cluster of members etcd servers for the test and
// waits until it answers; it is stopped when the test ends.
func StartEtcd(tb testing.TB, members int) *Etcd {
	tb.Helper()
	RequireEtcd(tb)
	e, err := LaunchEtcd(tb.TempDir(), members)
	if e != nil {
		tb.Cleanup(e.Stop)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// LaunchEtcd starts a cluster of members etcd servers on free ports of
// 127.0.0.1, with their data under dir, and waits until every member
// answers. The caller stops it (also after an error, if it is not nil).
func LaunchEtcd(dir string, members int) (*Etcd, error) {
	ports, err := freePorts(2 * members)
	if err != nil {
		return nil, err
	}
	var peers []string
	for i := range members {
		peers = append(peers, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i+1]))
	}
	e := &Etcd{}
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
			return e, fmt.Errorf("starting etcd: %w", err)
		}
		e.procs = append(e.procs, cmd)
		e.logs = append(e.logs, buf)
		e.Endpoints = append(e.Endpoints, client)
	}
	return e, e.waitHealthy()
}

// waitHealthy waits until every member answers /health with true.
func (e *Etcd) waitHealthy() error {
	deadline := time.Now().Add(30 * time.Second)
	for _, ep := range e.Endpoints {
		for {
			out, err := health(ep)
			if err == nil && strings.Contains(out, `"true"`) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("etcd at %s not healthy after 30 s: %v %s\nlog:\n%s", ep, err, out, e.Log())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
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

// EtcdClient connects to endpoints, quietly, and closes the client when
// the test ends.
func EtcdClient(tb testing.TB, endpoints []string) *clientv3.Client {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}
