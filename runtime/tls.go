package runtime

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"

	"github.com/granary-rt/granary/runtime/internal/tlsfiles"
)

// DefaultTLSReloadInterval is how often, at most, TLS files are checked for
// changes.
const DefaultTLSReloadInterval = tlsfiles.DefaultReloadInterval

// TLSConfig configures TLS for the connections of one kind: a silo's
// (Config.TLS: its listener and its connections to other silos), a
// client's to its gateways (ClientConfig.TLS), and any process's to etcd
// (EtcdConfig.TLS). A nil *TLSConfig means plaintext, the development
// default, meant for loopback only.
//
// Certificates, keys and CA bundles are PEM files. They are re-read when
// they change, without a restart: at most every ReloadInterval, the next
// new connection checks the files and, if one changed, loads them; that
// connection and later ones use the new certificate or bundle, established
// ones keep theirs. A change that does not load (a key that does not match
// the certificate, a bundle without certificates) is logged as an error
// and the previous files stay in use. Write the key before the certificate
// (or replace both at once, e.g. a symlink swap); a half-done rotation
// is retried at the next check.
type TLSConfig struct {
	// CertFile and KeyFile are this process's certificate (chain) and
	// private key. A silo needs them: it presents them to clients and to
	// other silos (mutual TLS). A client or etcd connection presents them
	// when set; give both or neither.
	CertFile, KeyFile string
	// CAFile is the CA bundle peers' certificates must chain to. A silo
	// needs it: the cluster's CA, which signs silos' certificates and
	// nothing else, since every certificate it signs is let into the silo
	// listener, where a peer may send what only silos send (reminder
	// ticks, forwarded requests, a caller's identity). A client or etcd
	// connection verifies servers against it; empty there: the system's
	// roots.
	CAFile string
	// ClientCAFile is the CA bundle a silo's gateway verifies clients'
	// certificates against: a CA of the clients' own, like etcd's
	// --trusted-ca-file beside its --peer-trusted-ca-file. A silo needs it
	// when ClientAuth is ClientCertRequired (the default) or
	// ClientCertOptional, and must not have it with ClientCertNone. It may
	// not be CAFile, hold any of CAFile's certificates, or hold one that
	// chains to CAFile (a silo refuses to start, and a rotated bundle that
	// does is not loaded): a client's certificate would then pass for a
	// silo's. Only for a silo: a client or etcd connection must leave it
	// empty.
	ClientCAFile string
	// ServerName is the name servers' certificates must hold. Default:
	// the host of the address dialed (an advertised IP address must then
	// be in the certificate's IP SANs).
	ServerName string
	// ClientAuth says whether a silo's gateway requires clients to
	// present a certificate signed by ClientCAFile. Default
	// ClientCertRequired. It has no effect on clients and etcd
	// connections, nor on the silo listener, which always requires a
	// certificate signed by CAFile.
	ClientAuth ClientAuth
	// ReloadInterval bounds how long a rotated file may go unnoticed.
	// Default DefaultTLSReloadInterval (10s).
	ReloadInterval time.Duration
}

// ClientAuth is a listener's policy for client certificates.
type ClientAuth int

const (
	// ClientCertRequired refuses connections without a certificate signed
	// by the client CA bundle: mutual TLS. The default.
	ClientCertRequired ClientAuth = iota
	// ClientCertOptional accepts connections without a certificate, and
	// verifies one when it is presented.
	ClientCertOptional
	// ClientCertNone does not ask clients for a certificate.
	ClientCertNone
)

var clientAuthNames = [...]string{ClientCertRequired: "require", ClientCertOptional: "optional", ClientCertNone: "none"}

// String returns "require", "optional" or "none".
func (a ClientAuth) String() string {
	if a < 0 || int(a) >= len(clientAuthNames) {
		return fmt.Sprintf("ClientAuth(%d)", int(a))
	}
	return clientAuthNames[a]
}

// MarshalText implements encoding.TextMarshaler.
func (a ClientAuth) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: "require", "optional"
// or "none".
func (a *ClientAuth) UnmarshalText(b []byte) error {
	for i, n := range clientAuthNames {
		if string(b) == n {
			*a = ClientAuth(i)
			return nil
		}
	}
	return fmt.Errorf("runtime: client auth %q: want one of %s", b, strings.Join(clientAuthNames[:], ", "))
}

func (a ClientAuth) tlsType() tls.ClientAuthType {
	switch a {
	case ClientCertOptional:
		return tls.VerifyClientCertIfGiven
	case ClientCertNone:
		return tls.NoClientCert
	}
	return tls.RequireAndVerifyClientCert
}

// validate checks c for the use named by field ("Config.TLS", ...);
// server says it configures a listener.
func (c *TLSConfig) validate(field string, server bool) error {
	if c == nil {
		return nil
	}
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("give both CertFile and KeyFile, or neither"))
	}
	if server && c.CertFile == "" {
		errs = append(errs, errors.New("a silo needs CertFile and KeyFile: it presents them to clients and other silos"))
	}
	if server && c.CAFile == "" {
		errs = append(errs, errors.New("a silo needs CAFile, the cluster's CA bundle: it verifies other silos' certificates"))
	}
	switch {
	case !server && c.ClientCAFile != "":
		errs = append(errs, errors.New("ClientCAFile is for a silo's gateway, which verifies clients' certificates against it; "+
			"a client or an etcd connection verifies servers against CAFile"))
	case server && (c.ClientAuth == ClientCertRequired || c.ClientAuth == ClientCertOptional) && c.ClientCAFile == "":
		errs = append(errs, fmt.Errorf("ClientAuth %s: the gateway verifies clients' certificates, so a silo needs ClientCAFile (%s), "+
			"the CA bundle of clients' certificates, distinct from CAFile (every certificate CAFile signs may talk to the silo listener as a silo); "+
			"for clients without certificates (bearer tokens), set ClientAuth none (%s)", c.ClientAuth, EnvTLSClientCA, EnvTLSClientAuth))
	case server && c.ClientAuth == ClientCertNone && c.ClientCAFile != "":
		errs = append(errs, errors.New("ClientCAFile is set but ClientAuth is none: the gateway asks clients for no certificate"))
	case server && c.ClientCAFile != "" && c.CAFile != "" && sameFile(c.ClientCAFile, c.CAFile):
		errs = append(errs, fmt.Errorf("ClientCAFile %s is CAFile: every client certificate it signs could talk to the silo listener as a silo; "+
			"give clients a CA of their own", c.ClientCAFile))
	}
	if c.ClientAuth < ClientCertRequired || c.ClientAuth > ClientCertNone {
		errs = append(errs, fmt.Errorf("ClientAuth %d is none of ClientCertRequired, ClientCertOptional, ClientCertNone (%s takes require, optional or none)",
			c.ClientAuth, EnvTLSClientAuth))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("ReloadInterval %v is negative", c.ReloadInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

// sameFile reports whether a and b name one file: the same path, or paths
// to the same file (a link).
func sameFile(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// source loads c's files.
func (c *TLSConfig) source(field string, log *zap.Logger) (*tlsfiles.Source, error) {
	src, err := tlsfiles.New(tlsfiles.Files{CertFile: c.CertFile, KeyFile: c.KeyFile, CAFile: c.CAFile, ClientCAFile: c.ClientCAFile}, c.ReloadInterval,
		log.Named("tls").With(zap.String("config", field)))
	if err != nil {
		return nil, fmt.Errorf("runtime: %s: %w", field, err)
	}
	return src, nil
}

// clientCredentials returns credentials for dialing with c: nil for
// plaintext when c is nil.
func (c *TLSConfig) clientCredentials(field string, log *zap.Logger) (credentials.TransportCredentials, error) {
	if c == nil {
		return nil, nil
	}
	src, err := c.source(field, log)
	if err != nil {
		return nil, err
	}
	return src.ClientCredentials(c.ServerName), nil
}

// siloCreds are a silo's TLS credentials, all over one load of its
// Config.TLS files; nil for plaintext.
type siloCreds struct {
	// silo is for a listener of other silos only: client certificates
	// signed by CAFile required, whatever ClientAuth says (mutual TLS
	// between silos).
	silo credentials.TransportCredentials
	// gateway is for a listener of clients: client certificates signed
	// by ClientCAFile, as ClientAuth says.
	gateway credentials.TransportCredentials
	// dial is for connections to other silos.
	dial credentials.TransportCredentials
}

// siloCredentials loads c's files for a silo (zero siloCreds when c is
// nil).
func (c *TLSConfig) siloCredentials(log *zap.Logger) (siloCreds, error) {
	if c == nil {
		return siloCreds{}, nil
	}
	src, err := c.source("Config.TLS", log)
	if err != nil {
		return siloCreds{}, err
	}
	var sc siloCreds
	if sc.silo, err = src.ServerCredentials(tls.RequireAndVerifyClientCert); err != nil {
		return siloCreds{}, fmt.Errorf("runtime: Config.TLS: %w", err)
	}
	if sc.gateway, err = src.ClientCAServerCredentials(c.ClientAuth.tlsType()); err != nil {
		return siloCreds{}, fmt.Errorf("runtime: Config.TLS: %w", err)
	}
	sc.dial = src.ClientCredentials(c.ServerName)
	log.Info("tls: silo listener verifies silos' certificates against CAFile; gateway verifies clients' against ClientCAFile",
		zap.String("ca_file", c.CAFile), zap.String("client_ca_file", c.ClientCAFile), zap.Stringer("client_auth", c.ClientAuth))
	return sc, nil
}

// isLoopback reports whether addr (a listener's address, or host:port, or
// a URL) is on the loopback interface only. An unspecified address
// (0.0.0.0, [::]) is not: it listens on every interface.
func isLoopback(addr string) bool {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// logRefusedPeers wraps the silo listener's credentials (nil: plaintext,
// returned as is) to log, rate-limited per peer host, the handshakes they
// refuse for the peer's certificate: most often a client pointed at the
// silo listener instead of the gateway, or a client certificate of the
// clients' CA presented where only the cluster CA's are let in.
func (s *Silo) logRefusedPeers(c credentials.TransportCredentials) credentials.TransportCredentials {
	if c == nil {
		return nil
	}
	return &refusedPeerLog{TransportCredentials: c, s: s}
}

type refusedPeerLog struct {
	credentials.TransportCredentials
	s *Silo
}

func (c *refusedPeerLog) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil && strings.Contains(err.Error(), "certificate") {
		peer := conn.RemoteAddr().String()
		host := peer
		if h, _, herr := net.SplitHostPort(peer); herr == nil {
			host = h
		}
		if ok, suppressed := c.s.tlsRefusals.allow(host); ok {
			c.s.log.Warn("silo listener: refused a peer without a certificate of the cluster CA (Config.TLS.CAFile): "+
				"only silos connect here; clients connect to the gateway, with a certificate of Config.TLS.ClientCAFile",
				zap.String("peer", peer), zap.String("gateway", c.s.gwAddr), zap.Int("suppressed_since_last", suppressed), zap.Error(err))
		}
	}
	return out, info, err
}

func (c *refusedPeerLog) Clone() credentials.TransportCredentials {
	return &refusedPeerLog{TransportCredentials: c.TransportCredentials.Clone(), s: c.s}
}
