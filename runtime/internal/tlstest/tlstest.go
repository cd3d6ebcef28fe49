// Package tlstest writes throwaway certificates for tests: a CA, and
// certificates it signs for servers and clients, as PEM files in a test's
// temporary directory. It uses crypto/x509 only (no openssl).
//
//	ca := tlstest.NewCA(t, "cluster")
//	silo := ca.Issue(t, "silo")             // silo.CertFile, silo.KeyFile
//	clients := tlstest.NewCA(t, "clients")
//	cfg := &runtime.TLSConfig{CertFile: silo.CertFile, KeyFile: silo.KeyFile, CAFile: ca.CertFile, ClientCAFile: clients.CertFile}
//
// Every leaf certificate is valid for server and client authentication, for
// 127.0.0.1, ::1, localhost and its own name, for one day.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority whose certificate is in CertFile.
type CA struct {
	Name     string
	CertFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	dir      string
}

// Pair is a certificate and its key, as PEM files.
type Pair struct {
	CertFile, KeyFile string
	// Serial is the certificate's serial number.
	Serial *big.Int
	// Cert is the parsed certificate.
	Cert *x509.Certificate
}

// NewCA creates a CA named name and writes its certificate to
// <tempdir>/<name>-ca.pem.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	return newCA(tb, name, nil, time.Now().Add(-time.Hour))
}

// Intermediate creates a CA named name whose certificate ca signs, and
// writes its certificate to <tempdir>/<name>-ca.pem.
func (ca *CA) Intermediate(tb testing.TB, name string) *CA {
	tb.Helper()
	return newCA(tb, name, ca, time.Now().Add(-time.Hour))
}

// IntermediateFrom is Intermediate with a certificate valid from
// notBefore (for a day from then): one not valid yet, for example.
func (ca *CA) IntermediateFrom(tb testing.TB, name string, notBefore time.Time) *CA {
	tb.Helper()
	return newCA(tb, name, ca, notBefore)
}

func newCA(tb testing.TB, name string, parent *CA, notBefore time.Time) *CA {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(tb),
		Subject:               pkix.Name{CommonName: name + " test CA"},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(25 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		tb.Fatalf("tlstest: create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("tlstest: parse CA certificate: %v", err)
	}
	ca := &CA{Name: name, cert: cert, key: key, dir: tb.TempDir()}
	ca.CertFile = filepath.Join(ca.dir, name+"-ca.pem")
	writePEM(tb, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Issue creates a certificate for name signed by the CA and writes it and
// its key to new files <name>.pem and <name>-key.pem.
func (ca *CA) Issue(tb testing.TB, name string) Pair {
	tb.Helper()
	return ca.IssueTo(tb, name, filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem"))
}

// IssueTo creates a certificate for name signed by the CA and writes it
// to certFile and its key to keyFile, replacing what they held (each file
// is replaced whole, by a rename): this is how a test rotates a
// certificate.
func (ca *CA) IssueTo(tb testing.TB, name, certFile, keyFile string) Pair {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(tb),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{name, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("tlstest: create certificate %s: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("tlstest: parse certificate %s: %v", name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("tlstest: marshal key %s: %v", name, err)
	}
	// The key first: a reader that sees the new certificate then finds its
	// key (a reader between the two renames sees a mismatched pair, which
	// it must reject and retry).
	writePEM(tb, keyFile, "PRIVATE KEY", kder)
	writePEM(tb, certFile, "CERTIFICATE", der)
	return Pair{CertFile: certFile, KeyFile: keyFile, Serial: cert.SerialNumber, Cert: cert}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("tlstest: generate key: %v", err)
	}
	return key
}

func newSerial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("tlstest: serial: %v", err)
	}
	return n
}

// writePEM writes one PEM block to path through a temporary file and a
// rename, so a concurrent reader sees the old file or the new one.
func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tlstest-*")
	if err != nil {
		tb.Fatalf("tlstest: %v", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: typ, Bytes: der}); err != nil {
		tmp.Close()
		tb.Fatalf("tlstest: write %s: %v", path, err)
	}
	if err := tmp.Close(); err != nil {
		tb.Fatalf("tlstest: write %s: %v", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		tb.Fatalf("tlstest: %v", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		tb.Fatalf("tlstest: %v", err)
	}
}
