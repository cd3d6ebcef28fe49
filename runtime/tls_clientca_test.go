package runtime_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/internal/tlsfiles"
	"github.com/granary-rt/granary/runtime/internal/tlstest"
	"github.com/granary-rt/granary/runtime/internal/transport"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// rawTLSClient is a transport client that presents pair and verifies
// servers against the cluster CA.
func rawTLSClient(t *testing.T, pki *testPKI, pair tlstest.Pair) *transport.Client {
	t.Helper()
	src, err := tlsfiles.New(tlsfiles.Files{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: pki.ca.CertFile}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := transport.NewClient(transport.ClientConfig{Credentials: src.ClientCredentials("")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return tc
}

// TestTLSClientCertificateOnSiloListener: a client's certificate, signed
// by the clients' CA, gets it onto the gateway and not onto the silo
// listener, where what only silos send would be accepted; a silo's,
// signed by the cluster CA, gets onto the silo listener, and silos call
// each other.
func TestTLSClientCertificateOnSiloListener(t *testing.T) {
	pki := newTestPKI(t)
	ctx := ctxT(t)
	// One silo: it hosts the clock and owns every reminder bucket, so
	// what a peer sends on its silo listener is served there.
	core, logs := observer.New(zap.WarnLevel)
	s := start(t, 1, runtime.Config{TLS: pki.siloTLS(), Logger: zap.New(core)}).Silos[0]
	clock := testgrains.NewClockRef(s.Client(), "clientca-clock")
	if _, err := clock.Counts(ctx); err != nil {
		t.Fatal(err)
	}
	probe := grain.ID{Type: testgrains.ProbeType.Name, Key: "clientca"}
	client := rawTLSClient(t, pki, pki.client)

	if err := rawCall(ctx, client, s.GatewayAddress(), probe, probePing.Name, []byte{0x80}); err != nil {
		t.Fatalf("a client certificate on the gateway: %v", err)
	}

	// On the silo listener the client's certificate is refused in the
	// handshake: nothing it sends is read.
	err := rawCall(ctx, client, s.Address(), probe, probePing.Name, []byte{0x80})
	checkCode(t, "a client certificate on the silo listener", err, grain.ErrSiloUnavailable, grain.OutcomeNotRun)
	if err != nil && !strings.Contains(err.Error(), "client certificate signed by its CA") {
		t.Errorf("the error does not say the silo listener wants a certificate of its CA: %v", err)
	}
	for _, r := range internalRequests(t, clock.ID()) {
		if _, err := client.Call(ctx, s.Address(), r.env()); !errors.Is(err, grain.ErrSiloUnavailable) {
			t.Errorf("%s with a client certificate on the silo listener: %v, want grain.ErrSiloUnavailable", r.name, err)
		}
	}
	// The silo says why, once per peer host for a while.
	runtimetest.Eventually(t, 10*time.Second, func() bool {
		return logs.FilterMessageSnippet("silo listener: refused a peer without a certificate of the cluster CA").Len() > 0
	}, "the silo never logged the refused client certificate")
	if n := logs.FilterMessageSnippet("silo listener: refused a peer").Len(); n != 1 {
		t.Errorf("%d log lines for refused handshakes from one host, want 1 (rate-limited)", n)
	}
	if c, err := clock.Counts(ctx); err != nil || c.Ticks["forged"] != 0 {
		t.Errorf("clock counts %+v, %v: want no forged tick", c, err)
	}

	// A silo's certificate is let in, and what only silos send works.
	peer := rawTLSClient(t, pki, pki.ca.Issue(t, "silo-2"))
	for _, r := range internalRequests(t, clock.ID()) {
		if _, err := peer.Call(ctx, s.Address(), r.env()); err != nil {
			t.Errorf("%s with a silo certificate on the silo listener: %v", r.name, err)
		}
	}
	if c, err := clock.Counts(ctx); err != nil || c.Ticks["forged"] != 1 {
		t.Errorf("clock counts %+v, %v: want the silo's forged tick only", c, err)
	}
	// Two silos call each other over mutual TLS with the cluster CA: the
	// client's calls (round robin over the gateways) place counters on
	// both silos, then each silo calls every counter.
	f := start(t, 2, runtime.Config{TLS: pki.siloTLS()})
	cc := connectTLS(t, f.Name, pki.clientTLS())
	const keys = 16
	for i := range keys {
		if _, err := testgrains.NewCounterRef(cc, fmt.Sprint("clientca-", i)).Add(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	hosts := (&procCluster{name: f.Name}).hosts(t, testgrains.CounterType.Name)
	per := map[string]int{}
	for _, h := range hosts {
		per[h]++
	}
	if per[f.Silos[0].ID()] == 0 || per[f.Silos[1].ID()] == 0 {
		t.Fatalf("counters per silo %v: want some on each, so that calls cross", per)
	}
	for i, silo := range f.Silos {
		for k := range keys {
			if n, err := testgrains.NewCounterRef(silo.Client(), fmt.Sprint("clientca-", k)).Add(ctx, 1); err != nil || n != int64(i+2) {
				t.Fatalf("silo %s calling counter clientca-%d: %d, %v", silo.ID(), k, n, err)
			}
		}
	}
}

// TestTLSRotatedClientCA rotates the clients' CA bundle: first to old and
// new CA (both clients' certificates work), then to the new CA alone (the
// old one's are refused on new connections), then to a bundle that holds
// the cluster CA, which is not loaded.
func TestTLSRotatedClientCA(t *testing.T) {
	pki := newTestPKI(t)
	tc := pki.siloTLS()
	tc.ReloadInterval = 20 * time.Millisecond
	core, logs := observer.New(zap.ErrorLevel)
	f := start(t, 1, runtime.Config{TLS: tc, Logger: zap.New(core)})
	ctx := ctxT(t)
	gw := f.Silos[0].GatewayAddress()
	probe := grain.ID{Type: testgrains.ProbeType.Name, Key: "rotated-client-ca"}
	// works reports whether a new connection presenting pair gets a call
	// through the gateway.
	works := func(pair tlstest.Pair) bool {
		return rawCall(ctx, rawTLSClient(t, pki, pair), gw, probe, probePing.Name, []byte{0x80}) == nil
	}
	oldPair := pki.client
	newCA := tlstest.NewCA(t, "clients-2")
	newPair := newCA.Issue(t, "client-2")
	if !works(oldPair) {
		t.Fatal("the first clients' CA's certificate is refused")
	}
	if works(newPair) {
		t.Fatal("a certificate of the next clients' CA works before the rotation")
	}

	writeBundle(t, pki.clientCA.CertFile, pki.clientCA.CertFile, newCA.CertFile)
	runtimetest.Eventually(t, 10*time.Second, func() bool { return works(newPair) },
		"the next clients' CA was never trusted after the rotation")
	if !works(oldPair) {
		t.Error("the first clients' CA's certificate is refused while the bundle still holds it")
	}

	writeBundle(t, pki.clientCA.CertFile, newCA.CertFile)
	runtimetest.Eventually(t, 10*time.Second, func() bool { return !works(oldPair) },
		"the first clients' CA was still trusted after it left the bundle")
	if !works(newPair) {
		t.Error("the next clients' CA's certificate is refused")
	}

	// A rotation to the cluster CA would let clients onto the silo
	// listener: it is refused, and the bundle in use stays.
	writeBundle(t, pki.clientCA.CertFile, pki.ca.CertFile)
	runtimetest.Eventually(t, 10*time.Second, func() bool {
		works(newPair) // a new connection checks the files
		return logs.FilterMessageSnippet("do not load").FilterFieldKey("error").Len() > 0
	}, "a client CA bundle holding the cluster CA loaded without an error")
	if msg := fmt.Sprint(logs.FilterMessageSnippet("do not load").All()[0].ContextMap()["error"]); !strings.Contains(msg, "which is also in CA bundle") {
		t.Errorf("the reload error does not say why: %s", msg)
	}
	if !works(newPair) {
		t.Error("after a refused rotation, the bundle in use no longer works")
	}
	if works(pki.silo) {
		t.Error("after a refused rotation to the cluster CA, a silo certificate works on the gateway")
	}
}
