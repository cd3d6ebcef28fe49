// Package tlsfiles keeps TLS material read from PEM files (a certificate,
// its key, a CA bundle) current while a process runs, and turns it into
// gRPC transport credentials for servers and clients.
//
// A server may verify client certificates against a second bundle of its
// own (Files.ClientCAFile), so that one process can run a listener for
// peers (certificates of CAFile) and one for clients (certificates of
// ClientCAFile) without either accepting the other's certificates.
//
// A Source re-reads its files when they change: at most once per reload
// interval, on the first handshake after the interval passed, it stats the
// files and, if one changed, loads them again. A new connection then uses
// the new certificate or CA bundle; established connections keep theirs.
// A change that does not load (a missing file, a key that does not match
// the certificate, a bundle without certificates) is logged as an error and
// the previous material stays in use; the next check tries again. Nothing
// runs in the background.
//
// The credentials delegate each handshake to grpc's credentials.NewTLS, so
// a server's handler finds the peer's certificates the standard way:
//
//	p, _ := peer.FromContext(ctx)
//	info, ok := p.AuthInfo.(credentials.TLSInfo) // info.State.PeerCertificates
package tlsfiles

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
)

// DefaultReloadInterval is how often, at most, a Source checks its files.
const DefaultReloadInterval = 10 * time.Second

// Files names the PEM files of a Source. CertFile and KeyFile go together
// (both or neither); CAFile is optional (empty: the system roots verify
// servers, and a server cannot verify clients).
//
// ClientCAFile, optional, is the bundle ClientCAServerCredentials verify
// client certificates against. It must be disjoint from CAFile: none of
// its certificates may be one of CAFile's (the same key) or chain to
// CAFile, or a certificate it signs would pass for one of CAFile's. A
// bundle that breaks this does not load.
type Files struct {
	CertFile, KeyFile, CAFile string
	ClientCAFile              string
}

// Source is TLS material loaded from Files and reloaded when they change.
// It is safe for concurrent use.
type Source struct {
	files    Files
	interval time.Duration
	log      *zap.Logger

	nextCheck atomic.Int64 // time.Now().UnixNano() after which the files are checked
	mu        sync.Mutex   // serializes checks
	stamps    [4]stamp     // of the files cur was loaded from
	cur       atomic.Pointer[material]
}

// material is one load of the files.
type material struct {
	cert *tls.Certificate // nil without CertFile
	pool *x509.CertPool   // nil without CAFile
	// clientPool is ClientCAFile's bundle: nil without one.
	clientPool *x509.CertPool
	gen        uint64
}

// stamp identifies a version of a file without reading it.
type stamp struct {
	mod  time.Time
	size int64
}

// New loads files. interval bounds how often they are checked for changes
// (0: DefaultReloadInterval); log receives reload errors and notices.
func New(files Files, interval time.Duration, log *zap.Logger) (*Source, error) {
	if (files.CertFile == "") != (files.KeyFile == "") {
		return nil, fmt.Errorf("tls: certificate file %q and key file %q: give both or neither", files.CertFile, files.KeyFile)
	}
	if interval == 0 {
		interval = DefaultReloadInterval
	}
	if interval < 0 {
		return nil, fmt.Errorf("tls: reload interval %v is negative", interval)
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Source{files: files, interval: interval, log: log}
	stamps := s.stat()
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.stamps = stamps
	s.cur.Store(m)
	s.nextCheck.Store(time.Now().Add(interval).UnixNano())
	return s, nil
}

// Files returns the files the source reads.
func (s *Source) Files() Files { return s.files }

// current returns the material in use, first reloading it if the files
// changed and a check is due.
func (s *Source) current() *material {
	if time.Now().UnixNano() >= s.nextCheck.Load() {
		s.check()
	}
	return s.cur.Load()
}

// check reloads the files if they changed since they were loaded.
func (s *Source) check() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if now.UnixNano() < s.nextCheck.Load() {
		return // another handshake just checked
	}
	s.nextCheck.Store(now.Add(s.interval).UnixNano())
	stamps := s.stat()
	if stamps == s.stamps {
		return
	}
	m, err := s.load()
	if err != nil {
		// Keep serving with what we have; the stamps stay old, so the
		// next check tries again (a rotation may be half written).
		s.log.Error("tls: changed certificate files do not load; still using the previous ones",
			zap.String("cert_file", s.files.CertFile), zap.String("key_file", s.files.KeyFile),
			zap.String("ca_file", s.files.CAFile), zap.String("client_ca_file", s.files.ClientCAFile), zap.Error(err))
		return
	}
	m.gen = s.cur.Load().gen + 1
	s.stamps = stamps
	s.cur.Store(m)
	fields := []zap.Field{zap.String("cert_file", s.files.CertFile), zap.String("ca_file", s.files.CAFile),
		zap.String("client_ca_file", s.files.ClientCAFile)}
	if m.cert != nil && m.cert.Leaf != nil {
		fields = append(fields, zap.String("serial", m.cert.Leaf.SerialNumber.String()),
			zap.Time("not_after", m.cert.Leaf.NotAfter))
	}
	s.log.Info("tls: reloaded certificate files", fields...)
}

func (s *Source) stat() [4]stamp {
	var out [4]stamp
	for i, name := range []string{s.files.CertFile, s.files.KeyFile, s.files.CAFile, s.files.ClientCAFile} {
		if name == "" {
			continue
		}
		if fi, err := os.Stat(name); err == nil {
			out[i] = stamp{mod: fi.ModTime(), size: fi.Size()}
		}
	}
	return out
}

func (s *Source) load() (*material, error) {
	m := &material{}
	if s.files.CertFile != "" {
		c, err := tls.LoadX509KeyPair(s.files.CertFile, s.files.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: load certificate %s and key %s: %w", s.files.CertFile, s.files.KeyFile, err)
		}
		if c.Leaf == nil && len(c.Certificate) > 0 {
			if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return nil, fmt.Errorf("tls: parse certificate %s: %w", s.files.CertFile, err)
			}
		}
		m.cert = &c
	}
	var cas []*x509.Certificate
	if s.files.CAFile != "" {
		var err error
		if m.pool, cas, err = loadBundle(s.files.CAFile); err != nil {
			return nil, err
		}
	}
	if s.files.ClientCAFile != "" {
		pool, clientCAs, err := loadBundle(s.files.ClientCAFile)
		if err != nil {
			return nil, err
		}
		if err := disjoint(clientCAs, s.files.ClientCAFile, cas, m.pool, s.files.CAFile); err != nil {
			return nil, err
		}
		m.clientPool = pool
	}
	return m, nil
}

// loadBundle reads the PEM CA bundle in name.
func loadBundle(name string) (*x509.CertPool, []*x509.Certificate, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: read CA bundle: %w", err)
	}
	var certs []*x509.Certificate
	for len(b) > 0 {
		var block *pem.Block
		if block, b = pem.Decode(b); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("tls: CA bundle %s: %w", name, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("tls: CA bundle %s holds no PEM certificate", name)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, certs, nil
}

// disjoint checks that no certificate of the client bundle is one of the
// CA bundle's (by key: a CA re-issued with its key is the same authority)
// or chains to it (an intermediate the CA signed), so that no certificate
// the client bundle vouches for is vouched for by the CA bundle too.
func disjoint(clientCAs []*x509.Certificate, clientFile string, cas []*x509.Certificate, pool *x509.CertPool, caFile string) error {
	for _, c := range clientCAs {
		for _, ca := range cas {
			if bytes.Equal(c.RawSubjectPublicKeyInfo, ca.RawSubjectPublicKeyInfo) {
				return fmt.Errorf("tls: client CA bundle %s holds %q, which is also in CA bundle %s: "+
					"a certificate it signs for a client would pass for a peer's; give clients a CA of their own",
					clientFile, c.Subject, caFile)
			}
		}
		for _, ca := range cas {
			// Signed by one of the CA bundle's certificates, whenever
			// either is valid: Verify below judges at the present time
			// only, and an intermediate not valid yet (or a CA certificate
			// renewed later) would pass it today and chain tomorrow.
			if c.CheckSignatureFrom(ca) == nil {
				return fmt.Errorf("tls: client CA bundle %s holds %q, which chains to CA bundle %s: "+
					"a certificate it signs for a client would pass for a peer's; give clients a CA of their own",
					clientFile, c.Subject, caFile)
			}
		}
		if pool == nil {
			continue
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			return fmt.Errorf("tls: client CA bundle %s holds %q, which chains to CA bundle %s: "+
				"a certificate it signs for a client would pass for a peer's; give clients a CA of their own",
				clientFile, c.Subject, caFile)
		}
	}
	return nil
}

// Certificate returns the certificate in use (nil without CertFile).
func (s *Source) Certificate() *tls.Certificate { return s.current().cert }

// ServerCredentials returns credentials for a gRPC server that presents the
// source's certificate and treats client certificates as auth says,
// verifying them against the CA bundle. The source must have a
// certificate, and a CA bundle unless auth is tls.NoClientCert.
func (s *Source) ServerCredentials(auth tls.ClientAuthType) (credentials.TransportCredentials, error) {
	m := s.cur.Load()
	switch {
	case m.cert == nil:
		return nil, errors.New("tls: a server needs a certificate and key")
	case m.pool == nil && auth >= tls.VerifyClientCertIfGiven:
		return nil, errors.New("tls: a server that verifies client certificates needs a CA bundle")
	}
	return &creds{src: s, server: true, auth: auth}, nil
}

// ClientCAServerCredentials is ServerCredentials verifying client
// certificates against the client CA bundle (Files.ClientCAFile) instead
// of the CA bundle. The source must have a client CA bundle unless auth is
// tls.NoClientCert.
func (s *Source) ClientCAServerCredentials(auth tls.ClientAuthType) (credentials.TransportCredentials, error) {
	m := s.cur.Load()
	switch {
	case m.cert == nil:
		return nil, errors.New("tls: a server needs a certificate and key")
	case m.clientPool == nil && auth >= tls.VerifyClientCertIfGiven:
		return nil, errors.New("tls: a server that verifies client certificates against the client CA bundle needs one")
	}
	return &creds{src: s, server: true, auth: auth, clientCA: true}, nil
}

// ClientCredentials returns credentials for a gRPC client that verifies
// servers against the CA bundle (the system roots without one) and presents
// the source's certificate, if it has one, to servers that ask. serverName
// is the name the server's certificate must hold; empty: the host of the
// address dialed.
func (s *Source) ClientCredentials(serverName string) credentials.TransportCredentials {
	return &creds{src: s, serverName: serverName}
}

// creds are transport credentials over a Source: each handshake uses the
// source's current material.
type creds struct {
	src        *Source
	server     bool
	auth       tls.ClientAuthType
	clientCA   bool // verify clients against material.clientPool
	serverName string

	mu  sync.Mutex
	gen uint64
	tc  credentials.TransportCredentials // built from material gen
}

// current returns grpc TLS credentials of the source's current material.
func (c *creds) current() credentials.TransportCredentials {
	m := c.src.current()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tc == nil || c.gen != m.gen {
		c.tc, c.gen = credentials.NewTLS(c.config(m)), m.gen
	}
	return c.tc
}

func (c *creds) config(m *material) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if m.cert != nil {
		cfg.Certificates = []tls.Certificate{*m.cert}
	}
	if c.server {
		cfg.ClientAuth, cfg.ClientCAs = c.auth, m.pool
		if c.clientCA {
			cfg.ClientCAs = m.clientPool
		}
	} else {
		cfg.RootCAs, cfg.ServerName = m.pool, c.serverName
	}
	return cfg
}

func (c *creds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.current().ClientHandshake(ctx, authority, conn)
}

func (c *creds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.current().ServerHandshake(conn)
}

func (c *creds) Info() credentials.ProtocolInfo { return c.current().Info() }

func (c *creds) Clone() credentials.TransportCredentials {
	return &creds{src: c.src, server: c.server, auth: c.auth, clientCA: c.clientCA, serverName: c.serverName}
}

// OverrideServerName implements the deprecated method of
// credentials.TransportCredentials.
func (c *creds) OverrideServerName(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.serverName, c.tc = name, nil
	return nil
}
