package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/tlsfiles"
	"github.com/granary-rt/granary/runtime/internal/tlstest"
)

// peerSerialHandler answers every request with the serial number of the
// client certificate its connection presented ("none" without TLS or
// certificate).
var peerSerialHandler = HandlerFunc(func(ctx context.Context, req *Envelope, reply Replier) {
	st, ok := PeerTLS(ctx)
	switch {
	case !ok:
		reply.Reply(NewResponse([]byte("plaintext")))
	case len(st.PeerCertificates) == 0:
		reply.Reply(NewResponse([]byte("none")))
	default:
		reply.Reply(NewResponse([]byte(st.PeerCertificates[0].SerialNumber.String())))
	}
})

func tlsSource(t *testing.T, files tlsfiles.Files, interval time.Duration) *tlsfiles.Source {
	t.Helper()
	src, err := tlsfiles.New(files, interval, nil)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// startTLSServer serves peerSerialHandler with a certificate of ca,
// requiring client certificates of ca.
func startTLSServer(t *testing.T, ca *tlstest.CA) string {
	t.Helper()
	p := ca.Issue(t, "server")
	sc, err := tlsSource(t, tlsfiles.Files{CertFile: p.CertFile, KeyFile: p.KeyFile, CAFile: ca.CertFile}, 0).
		ServerCredentials(tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, ServerConfig{Credentials: sc}, peerSerialHandler)
	return addr
}

func TestTLSMutualAndPeerCertificate(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	addr := startTLSServer(t, ca)
	cp := ca.Issue(t, "client")
	c := newTestClient(t, ClientConfig{Credentials: tlsSource(t, tlsfiles.Files{CertFile: cp.CertFile, KeyFile: cp.KeyFile, CAFile: ca.CertFile}, 0).ClientCredentials("")})
	resp, err := c.Call(testCtx(t), addr, request(mEcho, ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Body); got != cp.Serial.String() {
		t.Fatalf("the handler saw client certificate %s, want serial %s", got, cp.Serial)
	}
}

// dialError calls addr once with c and returns the error, which must come
// within the client's dial timeout (not the call's 20 s deadline) and say
// the request was not sent.
func dialError(t *testing.T, c *Client, addr string, dialTimeout time.Duration) error {
	t.Helper()
	start := time.Now()
	_, err := c.Call(testCtx(t), addr, request(mEcho, ""))
	if err == nil {
		t.Fatal("call succeeded")
	}
	if d := time.Since(start); d > dialTimeout {
		t.Errorf("the call failed after %v, more than the dial timeout %v", d, dialTimeout)
	}
	if !errors.Is(err, grain.ErrSiloUnavailable) || !errors.Is(err, ErrNotSent) {
		t.Errorf("error %v: want ErrSiloUnavailable and ErrNotSent (the request did not run)", err)
	}
	t.Log(err)
	return err
}

func TestTLSRefusals(t *testing.T) {
	const dialTimeout = 3 * time.Second
	ca := tlstest.NewCA(t, "cluster")
	addr := startTLSServer(t, ca)
	other := tlstest.NewCA(t, "other")
	foreign := other.Issue(t, "foreign")
	_, plainAddr := startServer(t, ServerConfig{}, peerSerialHandler)
	cp := ca.Issue(t, "client")
	good := tlsSource(t, tlsfiles.Files{CertFile: cp.CertFile, KeyFile: cp.KeyFile, CAFile: ca.CertFile}, 0)
	for _, tc := range []struct {
		name  string
		creds func() ClientConfig
		addr  string
		want  string
	}{
		{"plaintext client to a TLS server", func() ClientConfig { return ClientConfig{} }, addr,
			"this client dials without TLS: does the server require TLS?"},
		{"client without a certificate", func() ClientConfig {
			return ClientConfig{Credentials: tlsSource(t, tlsfiles.Files{CAFile: ca.CertFile}, 0).ClientCredentials("")}
		}, addr, "client certificate"},
		{"client with a certificate of another CA", func() ClientConfig {
			return ClientConfig{Credentials: tlsSource(t, tlsfiles.Files{CertFile: foreign.CertFile, KeyFile: foreign.KeyFile, CAFile: ca.CertFile}, 0).ClientCredentials("")}
		}, addr, "client certificate"},
		{"client that does not trust the server's CA", func() ClientConfig {
			return ClientConfig{Credentials: tlsSource(t, tlsfiles.Files{CertFile: foreign.CertFile, KeyFile: foreign.KeyFile, CAFile: other.CertFile}, 0).ClientCredentials("")}
		}, addr, "certificate signed by unknown authority"},
		{"client whose server name the certificate lacks", func() ClientConfig {
			return ClientConfig{Credentials: good.ClientCredentials("silo.example")}
		}, addr, "silo.example"},
		{"TLS client to a plaintext server", func() ClientConfig { return ClientConfig{Credentials: good.ClientCredentials("")} }, plainAddr,
			"the server speaks plaintext"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.creds()
			cfg.DialTimeout = dialTimeout
			err := dialError(t, newTestClient(t, cfg), tc.addr, dialTimeout)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestTLSRotatedClientCertificate(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	addr := startTLSServer(t, ca)
	first := ca.Issue(t, "client")
	src := tlsSource(t, tlsfiles.Files{CertFile: first.CertFile, KeyFile: first.KeyFile, CAFile: ca.CertFile}, 10*time.Millisecond)
	// Each new Client opens a new connection, as a process restarting its
	// connections would.
	serial := func() string {
		c, err := NewClient(ClientConfig{Credentials: src.ClientCredentials("")})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		resp, err := c.Call(testCtx(t), addr, request(mEcho, ""))
		if err != nil {
			t.Fatal(err)
		}
		return string(resp.Body)
	}
	if got := serial(); got != first.Serial.String() {
		t.Fatalf("serial %s, want %s", got, first.Serial)
	}
	second := ca.IssueTo(t, "client", first.CertFile, first.KeyFile)
	waitFor(t, 5*time.Second, func() bool { return serial() == second.Serial.String() },
		"the server never saw the rotated client certificate %v", second.Serial)
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
