package mountcmd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"scanlockfs/lockmgr"
)

// The --etcd flags of mount, run, status and cleanup: with --etcd, every
// scan lock is also a cluster-wide lock in etcd (lockmgr.WithEtcd), so
// that hosts sharing a scan tree exclude each other.

const (
	flagEtcd        = "etcd"
	envEtcd         = "SCANLOCKFS_ETCD"
	envEtcdPassword = "SCANLOCKFS_ETCD_PASSWORD"
)

// etcdFlags are the flags of the cluster lock.
func etcdFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagEtcd, EnvVars: []string{envEtcd},
			Usage: "also lock scans across hosts in the etcd cluster at `URL[,URL...]` (in -o: etcd=URL+URL...); every host on SOURCE must use the same cluster and --etcd-prefix"},
		&cli.StringFlag{Name: "etcd-prefix", Value: lockmgr.DefaultEtcdPrefix, Usage: "put the cluster's lock keys under `PREFIX` (one per scan tree)"},
		&cli.DurationFlag{Name: "etcd-ttl", Value: lockmgr.DefaultEtcdTTL, Usage: "session lease `D` (whole seconds, at least 1 s): locks of a host that dies are free after it"},
		&cli.StringFlag{Name: "etcd-cacert", TakesFile: true, Usage: "verify etcd's TLS certificate with the CA bundle `FILE`"},
		&cli.StringFlag{Name: "etcd-cert", TakesFile: true, Usage: "client TLS certificate `FILE` for etcd"},
		&cli.StringFlag{Name: "etcd-key", TakesFile: true, Usage: "client TLS key `FILE` for etcd"},
		&cli.StringFlag{Name: "etcd-user", Usage: "etcd user `NAME`; the password is read from --etcd-password-file or " + envEtcdPassword},
		&cli.StringFlag{Name: "etcd-password-file", TakesFile: true, Usage: "read the etcd password from `FILE` (first line)"},
	}
}

// EtcdSettings are the --etcd flags.
type EtcdSettings struct {
	Endpoints              []string // none: no cluster lock
	Prefix                 string
	TTL                    time.Duration
	CACert, Cert, Key      string
	User, Password         string
	DialTimeout, StartWait time.Duration
}

// etcdSettings reads the --etcd flags of c.
func etcdSettings(c *cli.Context) (EtcdSettings, error) {
	s := EtcdSettings{Prefix: c.String("etcd-prefix"), TTL: c.Duration("etcd-ttl"),
		CACert: c.String("etcd-cacert"), Cert: c.String("etcd-cert"), Key: c.String("etcd-key"), User: c.String("etcd-user")}
	for _, ep := range strings.FieldsFunc(c.String(flagEtcd), func(r rune) bool { return r == ',' || r == '+' }) {
		s.Endpoints = append(s.Endpoints, strings.TrimSpace(ep))
	}
	if len(s.Endpoints) == 0 {
		return s, nil
	}
	if s.TTL < time.Second || s.TTL%time.Second != 0 {
		return s, usageErrorf("--etcd-ttl %v: give whole seconds, at least 1s", s.TTL)
	}
	if (s.Cert == "") != (s.Key == "") {
		return s, usageErrorf("--etcd-cert and --etcd-key go together")
	}
	if s.User != "" {
		s.Password = os.Getenv(envEtcdPassword)
		if f := c.String("etcd-password-file"); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return s, usageErrorf("--etcd-password-file: %w", err)
			}
			s.Password, _, _ = strings.Cut(string(b), "\n")
		}
	}
	return s, nil
}

// lockOptions connects to the cluster and returns the lockmgr option and
// the client, which the caller closes after the manager; none without
// --etcd.
func (s EtcdSettings) lockOptions() ([]lockmgr.Option, *clientv3.Client, error) {
	if len(s.Endpoints) == 0 {
		return nil, nil, nil
	}
	cfg := clientv3.Config{Endpoints: s.Endpoints, DialTimeout: max(s.DialTimeout, 5*time.Second),
		Username: s.User, Password: s.Password, Logger: zap.NewNop()}
	if s.CACert != "" || s.Cert != "" {
		tc, err := s.tlsConfig()
		if err != nil {
			return nil, nil, err
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, nil, exitf(ExitCluster, "etcd at %s: %w", strings.Join(s.Endpoints, ","), err)
	}
	return []lockmgr.Option{lockmgr.WithEtcd(lockmgr.EtcdConfig{Client: cli, Prefix: s.Prefix, TTL: s.TTL, StartTimeout: s.StartWait})}, cli, nil
}

func (s EtcdSettings) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CACert != "" {
		pem, err := os.ReadFile(s.CACert)
		if err != nil {
			return nil, usageErrorf("--etcd-cacert: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usageErrorf("--etcd-cacert %s: no PEM certificate in it", s.CACert)
		}
	}
	if s.Cert != "" {
		cert, err := tls.LoadX509KeyPair(s.Cert, s.Key)
		if err != nil {
			return nil, usageErrorf("--etcd-cert/--etcd-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// etcdOptions reads the --etcd flags of c and connects: the lockmgr
// options (none without --etcd) and a function that closes the client,
// to call after the manager is closed.
func etcdOptions(c *cli.Context) ([]lockmgr.Option, func(), error) {
	s, err := etcdSettings(c)
	if err != nil {
		return nil, func() {}, err
	}
	opts, cli, err := s.lockOptions()
	return opts, func() { closeClient(cli) }, err
}

// clusterExit gives an error of lockmgr.New the cluster's exit code when
// etcd was the cause; otherwise it returns def.
func clusterExit(err error, def int) int {
	if errors.Is(err, lockmgr.ErrCluster) {
		return ExitCluster
	}
	return def
}

// closeClient closes an etcd client, if any.
func closeClient(c *clientv3.Client) {
	if c != nil {
		_ = c.Close()
	}
}
