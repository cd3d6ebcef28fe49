package runtime

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
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
	// needs it (the cluster's CA: it verifies other silos, and the
	// certificates of clients). Empty on a client or etcd connection:
	// servers are verified against the system's roots.
	CAFile string
	// ServerName is the name servers' certificates must hold. Default:
	// the host of the address dialed (an advertised IP address must then
	// be in the certificate's IP SANs).
	ServerName string
	// ClientAuth says whether a silo requires clients to present a
	// certificate signed by CAFile. Default ClientCertRequired. It has no
	// effect on clients and etcd connections. (While clients and silos
	// share the silo's one listener, it applies to silos too: with
	// ClientCertOptional, a peer without a certificate is let in.)
	ClientAuth ClientAuth
	// ReloadInterval bounds how long a rotated file may go unnoticed.
	// Default DefaultTLSReloadInterval (10s).
	ReloadInterval time.Duration
}

// ClientAuth is a listener's policy for client certificates.
type ClientAuth int

const (
	// ClientCertRequired refuses connections without a certificate signed
	// by the CA bundle: mutual TLS. The default.
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

// source loads c's files.
func (c *TLSConfig) source(field string, log *zap.Logger) (*tlsfiles.Source, error) {
	src, err := tlsfiles.New(tlsfiles.Files{CertFile: c.CertFile, KeyFile: c.KeyFile, CAFile: c.CAFile}, c.ReloadInterval,
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
	// required, whatever ClientAuth says (mutual TLS between silos).
	silo credentials.TransportCredentials
	// gateway is for a listener of clients: client certificates as
	// ClientAuth says.
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
	if sc.gateway, err = src.ServerCredentials(c.ClientAuth.tlsType()); err != nil {
		return siloCreds{}, fmt.Errorf("runtime: Config.TLS: %w", err)
	}
	sc.dial = src.ClientCredentials(c.ServerName)
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
