package tlsfiles_test

import (
	"context"
	"crypto/tls"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/credentials"

	"github.com/granary-rt/granary/runtime/internal/tlsfiles"
	"github.com/granary-rt/granary/runtime/internal/tlstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// handshake runs one handshake between server and client credentials over
// a loopback connection and returns what each side saw of the other, or the first error.
func handshake(t *testing.T, server, client credentials.TransportCredentials) (serverSaw, clientSaw *big.Int, err error) {
	t.Helper()
	// TCP, not net.Pipe: a pipe's writes wait for the reader, and a TLS
	// alert sent while the peer writes its own flight would never go.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	cc, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	type result struct {
		info credentials.AuthInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, info, err := server.ServerHandshake(sc)
		if err != nil {
			sc.Close() // the client stops waiting
		} else {
			// Read until the client closes: in TLS 1.3 the server's
			// verdict on the client certificate reaches the client on its
			// first read.
			go func() { _, _ = conn.Read(make([]byte, 1)) }()
		}
		done <- result{info, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, cinfo, cerr := client.ClientHandshake(ctx, "127.0.0.1:1", cc)
	if cerr == nil {
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := conn.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			cerr = err
		}
	}
	if cerr != nil {
		cc.Close()
	}
	r := <-done
	if cerr != nil {
		return nil, nil, cerr
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	if st := r.info.(credentials.TLSInfo).State; len(st.PeerCertificates) > 0 {
		serverSaw = st.PeerCertificates[0].SerialNumber
	}
	clientSaw = cinfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber
	return serverSaw, clientSaw, nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestTLSMutualHandshake(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	srvPair, cliPair := ca.Issue(t, "server"), ca.Issue(t, "client")
	srv, err := tlsfiles.New(tlsfiles.Files{CertFile: srvPair.CertFile, KeyFile: srvPair.KeyFile, CAFile: ca.CertFile}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := tlsfiles.New(tlsfiles.Files{CertFile: cliPair.CertFile, KeyFile: cliPair.KeyFile, CAFile: ca.CertFile}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := srv.ServerCredentials(tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	serverSaw, clientSaw, err := handshake(t, sc, cli.ClientCredentials(""))
	if err != nil {
		t.Fatal(err)
	}
	if serverSaw.Cmp(cliPair.Serial) != 0 || clientSaw.Cmp(srvPair.Serial) != 0 {
		t.Fatalf("server saw %v (want %v), client saw %v (want %v)", serverSaw, cliPair.Serial, clientSaw, srvPair.Serial)
	}

	// A client without a certificate, and one whose certificate another CA
	// signed, are refused.
	bare, err := tlsfiles.New(tlsfiles.Files{CAFile: ca.CertFile}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(t, sc, bare.ClientCredentials("")); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	other := tlstest.NewCA(t, "other")
	foreignPair := other.Issue(t, "foreign")
	foreign, err := tlsfiles.New(tlsfiles.Files{CertFile: foreignPair.CertFile, KeyFile: foreignPair.KeyFile, CAFile: ca.CertFile}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(t, sc, foreign.ClientCredentials("")); err == nil {
		t.Fatal("a client with a certificate of another CA was accepted")
	}
	// A client that trusts only another CA refuses the server.
	distrust, err := tlsfiles.New(tlsfiles.Files{CAFile: other.CertFile}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	noAuth, err := srv.ServerCredentials(tls.NoClientCert)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := handshake(t, noAuth, distrust.ClientCredentials("")); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client trusting another CA: %v, want a certificate error", err)
	}
}

func TestTLSReloadRotatedCertificate(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	first := ca.Issue(t, "server")
	core, logs := observer.New(zap.InfoLevel)
	const interval = 20 * time.Millisecond
	srv, err := tlsfiles.New(tlsfiles.Files{CertFile: first.CertFile, KeyFile: first.KeyFile, CAFile: ca.CertFile}, interval, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := tlsfiles.New(tlsfiles.Files{CAFile: ca.CertFile}, interval, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := srv.ServerCredentials(tls.NoClientCert)
	if err != nil {
		t.Fatal(err)
	}
	cc := cli.ClientCredentials("")
	serial := func() *big.Int {
		t.Helper()
		_, saw, err := handshake(t, sc, cc)
		if err != nil {
			t.Fatal(err)
		}
		return saw
	}
	if got := serial(); got.Cmp(first.Serial) != 0 {
		t.Fatalf("serial %v, want %v", got, first.Serial)
	}

	second := ca.IssueTo(t, "server", first.CertFile, first.KeyFile)
	waitSerial(t, serial, second.Serial)
	if logs.FilterMessage("tls: reloaded certificate files").Len() == 0 {
		t.Error("no reload logged")
	}

	// A broken rotation (a key that does not match) keeps the certificate
	// in use and logs an error; fixing it is picked up.
	third := ca.IssueTo(t, "server", first.CertFile, t.TempDir()+"/elsewhere-key.pem")
	time.Sleep(3 * interval)
	if got := serial(); got.Cmp(second.Serial) != 0 {
		t.Fatalf("after a broken rotation the server presents %v, want the previous %v", got, second.Serial)
	}
	if logs.FilterMessage("tls: changed certificate files do not load; still using the previous ones").Len() == 0 {
		t.Fatal("a broken rotation logged no error")
	}
	key, err := os.ReadFile(third.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(first.KeyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, serial, third.Serial)
}

func waitSerial(t *testing.T, serial func() *big.Int, want *big.Int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := serial()
		if got.Cmp(want) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections still see serial %v after 5s, want %v", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster")
	p := ca.Issue(t, "x")
	bad := t.TempDir() + "/bad.pem"
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files tlsfiles.Files
		want  string
	}{
		{"cert without key", tlsfiles.Files{CertFile: p.CertFile}, "give both or neither"},
		{"missing cert", tlsfiles.Files{CertFile: "/nonexistent.pem", KeyFile: p.KeyFile}, "/nonexistent.pem"},
		{"mismatched key", tlsfiles.Files{CertFile: p.CertFile, KeyFile: ca.Issue(t, "y").KeyFile}, "private key does not match"},
		{"CA without certificates", tlsfiles.Files{CAFile: bad}, "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsfiles.New(tc.files, 0, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	noCert, err := tlsfiles.New(tlsfiles.Files{CAFile: ca.CertFile}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noCert.ServerCredentials(tls.NoClientCert); err == nil {
		t.Error("server credentials without a certificate")
	}
}

// TestClientCA: the server credentials of the client CA bundle take
// certificates it signed and refuse the CA bundle's, and those of the CA
// bundle the reverse; a client CA bundle that overlaps the CA bundle does
// not load.
func TestClientCA(t *testing.T) {
	ca, clients := tlstest.NewCA(t, "cluster"), tlstest.NewCA(t, "clients")
	srvPair := ca.Issue(t, "silo")
	srv, err := tlsfiles.New(tlsfiles.Files{CertFile: srvPair.CertFile, KeyFile: srvPair.KeyFile, CAFile: ca.CertFile, ClientCAFile: clients.CertFile}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	peers, err := srv.ServerCredentials(tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	gateway, err := srv.ClientCAServerCredentials(tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	dialer := func(p tlstest.Pair) credentials.TransportCredentials {
		src, err := tlsfiles.New(tlsfiles.Files{CertFile: p.CertFile, KeyFile: p.KeyFile, CAFile: ca.CertFile}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return src.ClientCredentials("")
	}
	peer, client := ca.Issue(t, "peer"), clients.Issue(t, "client")
	for _, tc := range []struct {
		name   string
		server credentials.TransportCredentials
		pair   tlstest.Pair
		ok     bool
	}{
		{"peer on the peer listener", peers, peer, true},
		{"client on the peer listener", peers, client, false},
		{"client on the client listener", gateway, client, true},
		{"peer on the client listener", gateway, peer, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saw, _, err := handshake(t, tc.server, dialer(tc.pair))
			if tc.ok && (err != nil || saw.Cmp(tc.pair.Serial) != 0) {
				t.Fatalf("handshake: server saw %v, %v; want %v", saw, err, tc.pair.Serial)
			}
			if !tc.ok && err == nil {
				t.Fatal("the handshake succeeded")
			}
		})
	}

	noClientCA, err := tlsfiles.New(tlsfiles.Files{CertFile: srvPair.CertFile, KeyFile: srvPair.KeyFile, CAFile: ca.CertFile}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noClientCA.ClientCAServerCredentials(tls.VerifyClientCertIfGiven); err == nil {
		t.Error("client CA credentials without a client CA bundle")
	}
	for _, tc := range []struct{ name, clientCA, want string }{
		{"the CA bundle itself", ca.CertFile, "also in CA bundle"},
		{"an intermediate of the CA", ca.Intermediate(t, "sub").CertFile, "chains to CA bundle"},
		// Not valid yet, it does not verify today; from tomorrow the
		// client certificates it signs would pass for peers'.
		{"an intermediate of the CA valid from tomorrow", ca.IntermediateFrom(t, "later", time.Now().Add(24*time.Hour)).CertFile, "chains to CA bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsfiles.New(tlsfiles.Files{CertFile: srvPair.CertFile, KeyFile: srvPair.KeyFile, CAFile: ca.CertFile, ClientCAFile: tc.clientCA}, 0, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
