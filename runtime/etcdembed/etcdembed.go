// Package etcdembed starts an etcd server inside the current process. It is
// the development default of a silo with no etcd endpoints configured, and
// what tests and `make demo` use: a real etcd, on loopback, with its data in
// a temporary directory.
//
//	srv, err := etcdembed.Start(ctx, etcdembed.Config{})
//	if err != nil { ... }
//	defer srv.Close()
//	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints()})
package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config configures an embedded etcd server. The zero value starts a
// single-member server on random loopback ports in a new temporary
// directory that Close removes.
type Config struct {
	// Dir is the data directory. Empty: a new temporary directory, removed
	// by Close.
	Dir string
	// ClientAddr is the host:port clients connect to. Empty: 127.0.0.1 on
	// a free port.
	ClientAddr string
	// Fsync makes the server fsync its write-ahead log, as a production
	// etcd does. Off by default: the embedded server is for development
	// and tests, where durability across power loss does not matter and
	// fsync latency would dominate every write.
	Fsync bool
	// BcryptCost is the bcrypt cost of the server's user passwords, which
	// every login (an etcd client with a user name) pays. Default: etcd's
	// (10). Tests that turn on etcd authentication lower it to 4
	// (bcrypt.MinCost) so that logins stay cheap under the race detector.
	BcryptCost uint
	// StartTimeout bounds how long Start waits for the server to be ready.
	// Default 30s.
	StartTimeout time.Duration
	// CertFile and KeyFile, PEM files, make the server serve TLS to its
	// clients (https:// endpoints) with this certificate. The files are
	// read on every handshake, so rotated files apply to new connections.
	CertFile, KeyFile string
	// CAFile is the PEM CA bundle client certificates must chain to.
	CAFile string
	// ClientCertAuth makes the server require a client certificate signed
	// by CAFile (mutual TLS).
	ClientCertAuth bool
	// Logger receives the server's logs. Default: no logs.
	Logger *zap.Logger
}

// Server is a running embedded etcd.
type Server struct {
	etcd    *embed.Etcd
	dir     string
	ownsDir bool
	client  string
}

// Start starts an embedded etcd server and waits until it is ready to serve.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	switch {
	case (cfg.CertFile == "") != (cfg.KeyFile == ""):
		return nil, fmt.Errorf("etcdembed: give both CertFile %q and KeyFile %q, or neither", cfg.CertFile, cfg.KeyFile)
	case cfg.CertFile == "" && (cfg.CAFile != "" || cfg.ClientCertAuth):
		return nil, errors.New("etcdembed: CAFile and ClientCertAuth need TLS: give CertFile and KeyFile")
	case cfg.ClientCertAuth && cfg.CAFile == "":
		return nil, errors.New("etcdembed: ClientCertAuth needs CAFile to verify client certificates")
	}
	s := &Server{dir: cfg.Dir}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "granary-etcd-")
		if err != nil {
			return nil, fmt.Errorf("etcdembed: create data dir: %w", err)
		}
		s.dir, s.ownsDir = d, true
	}
	clientAddr := cfg.ClientAddr
	if clientAddr == "" {
		a, err := freeAddr()
		if err != nil {
			s.removeDir()
			return nil, err
		}
		clientAddr = a
	}
	peerAddr, err := freeAddr()
	if err != nil {
		s.removeDir()
		return nil, err
	}
	ec := embed.NewConfig()
	ec.Name = "granary"
	ec.Dir = s.dir
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(cfg.Logger)
	ec.UnsafeNoFsync = !cfg.Fsync
	if cfg.BcryptCost != 0 {
		ec.BcryptCost = cfg.BcryptCost
	}
	cu := url.URL{Scheme: "http", Host: clientAddr}
	if cfg.CertFile != "" {
		cu.Scheme = "https"
		ec.ClientTLSInfo = transport.TLSInfo{
			CertFile:       cfg.CertFile,
			KeyFile:        cfg.KeyFile,
			TrustedCAFile:  cfg.CAFile,
			ClientCertAuth: cfg.ClientCertAuth,
		}
	}
	pu := url.URL{Scheme: "http", Host: peerAddr}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = ec.Name + "=" + pu.String()
	ec.InitialClusterToken = "granary-embedded"

	e, err := embed.StartEtcd(ec)
	if err != nil {
		s.removeDir()
		return nil, fmt.Errorf("etcdembed: start: %w", err)
	}
	s.etcd, s.client = e, cu.String()
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return s, nil
	case err := <-e.Err():
		s.Close()
		return nil, fmt.Errorf("etcdembed: start: %w", err)
	case <-timer.C:
		s.Close()
		return nil, fmt.Errorf("etcdembed: not ready after %v", cfg.StartTimeout)
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("etcdembed: start: %w", ctx.Err())
	}
}

// Endpoints returns the client URLs to give to clientv3 (https:// with
// TLS).
func (s *Server) Endpoints() []string { return []string{s.client} }

// Dir returns the data directory.
func (s *Server) Dir() string { return s.dir }

// Close stops the server and, if Start created the data directory, removes
// it.
func (s *Server) Close() error {
	if s.etcd != nil {
		s.etcd.Close()
		<-s.etcd.Server.StopNotify()
		s.etcd = nil
	}
	return s.removeDir()
}

func (s *Server) removeDir() error {
	if !s.ownsDir {
		return nil
	}
	s.ownsDir = false
	if err := os.RemoveAll(s.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("etcdembed: remove data dir: %w", err)
	}
	return nil
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. etcd must advertise the exact peer URL it listens on, so port 0
// cannot be handed to it directly.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("etcdembed: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
