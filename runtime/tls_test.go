package runtime_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/etcdembed"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/internal/tlstest"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// testPKI is a cluster CA with a silo certificate, and a clients' CA with
// a client certificate.
type testPKI struct {
	ca, clientCA *tlstest.CA
	silo, client tlstest.Pair
}

func newTestPKI(t testing.TB) *testPKI {
	ca, clientCA := tlstest.NewCA(t, "cluster"), tlstest.NewCA(t, "clients")
	return &testPKI{ca: ca, clientCA: clientCA, silo: ca.Issue(t, "silo"), client: clientCA.Issue(t, "client")}
}

// siloTLS is the silo's TLSConfig.
func (p *testPKI) siloTLS() *runtime.TLSConfig {
	return &runtime.TLSConfig{CertFile: p.silo.CertFile, KeyFile: p.silo.KeyFile, CAFile: p.ca.CertFile, ClientCAFile: p.clientCA.CertFile}
}

// clientTLS is a client's TLSConfig with its certificate.
func (p *testPKI) clientTLS() *runtime.TLSConfig {
	return &runtime.TLSConfig{CertFile: p.client.CertFile, KeyFile: p.client.KeyFile, CAFile: p.ca.CertFile}
}

// siloEnv configures a silo process's TLS as a silo host is configured:
// through runtime.BindFlags' environment.
func (p *testPKI) siloEnv() []string {
	return []string{
		runtime.EnvTLSCert + "=" + p.silo.CertFile,
		runtime.EnvTLSKey + "=" + p.silo.KeyFile,
		runtime.EnvTLSCA + "=" + p.ca.CertFile,
		runtime.EnvTLSClientCA + "=" + p.clientCA.CertFile,
	}
}

func connectTLS(t *testing.T, cluster string, tc *runtime.TLSConfig) *runtime.Client {
	t.Helper()
	c, err := runtime.Connect(ctxT(t), runtime.ClientConfig{Cluster: cluster, Etcd: runtime.EtcdConfig{Endpoints: endpoints}, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTLSClusterProcesses runs a TLS cluster across processes: two silo
// processes configured by the GRANARY_TLS_* environment, a silo in this
// process configured by Config.TLS, and a client with a certificate. The
// in-process silo's calls reach grains on the processes (silo to silo,
// mutual TLS); the client's reach all three (client to silo).
func TestTLSClusterProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts silo processes")
	}
	pki := newTestPKI(t)
	name := fmt.Sprintf("tls-proc-%d", time.Now().UnixNano())
	procs := make([]*runtimetest.SiloProcess, 2)
	for i := range procs {
		procs[i] = runtimetest.StartSiloProcess(t, runtimetest.SiloProcessOptions{Endpoints: endpoints, Cluster: name, Env: pki.siloEnv()})
	}
	local := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   runtime.Config{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}, TLS: pki.siloTLS()},
		Register: registerTestGrains(testgrains.NewObserver()),
	}).Silos[0]
	client := connectTLS(t, name, pki.clientTLS())
	ctx := ctxT(t)
	if _, err := client.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == 3 }); err != nil {
		t.Fatalf("the client never saw 3 silos: %v", err)
	}
	const grains = 60
	for i := range grains {
		key := fmt.Sprint("g", i)
		if n, err := testgrains.NewCounterRef(local.Client(), key).Add(ctx, 1); err != nil || n != 1 {
			t.Fatalf("silo %s calling counter %s: %d, %v", local.ID(), key, n, err)
		}
		if n, err := testgrains.NewCounterRef(client, key).Add(ctx, 1); err != nil || n != 2 {
			t.Fatalf("client calling counter %s: %d, %v", key, n, err)
		}
	}
	// The grains spread over the three silos: the in-process silo called
	// both processes over mutual TLS.
	perSilo := map[string]int{}
	for _, silo := range (&procCluster{name: name}).hosts(t, testgrains.CounterType.Name) {
		perSilo[silo]++
	}
	for _, p := range procs {
		if perSilo[p.ID] == 0 {
			t.Errorf("silo process %s hosts none of %d grains: %v", p.ID, grains, perSilo)
		}
	}
	t.Logf("grains per silo: %v", perSilo)
}

// refusedFast calls a counter through c and checks the call fails as not
// sent, within the dial timeout (not the call's deadline), with an error
// containing want.
func refusedFast(t *testing.T, c grain.Caller, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := testgrains.NewCounterRef(c, "refused").Add(ctx, 1)
	took := time.Since(start)
	if err == nil {
		t.Fatal("the call succeeded")
	}
	t.Logf("after %v: %v", took, err)
	if !errors.Is(err, grain.ErrSiloUnavailable) || grain.OutcomeOf(err) != grain.OutcomeNotRun {
		t.Errorf("error %v: want grain.ErrSiloUnavailable, outcome not run", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if took > runtime.DefaultDialTimeout {
		t.Errorf("the call failed after %v, beyond the dial timeout %v", took, runtime.DefaultDialTimeout)
	}
}

func TestTLSClientRefusals(t *testing.T) {
	pki := newTestPKI(t)
	f := start(t, 1, runtime.Config{TLS: pki.siloTLS()})
	t.Run("client with a certificate", func(t *testing.T) {
		if _, err := testgrains.NewCounterRef(connectTLS(t, f.Name, pki.clientTLS()), "ok").Add(ctxT(t), 1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("client without a certificate", func(t *testing.T) {
		refusedFast(t, connectTLS(t, f.Name, &runtime.TLSConfig{CAFile: pki.ca.CertFile}), "client certificate")
	})
	t.Run("client with a certificate of another CA", func(t *testing.T) {
		other := tlstest.NewCA(t, "other").Issue(t, "intruder")
		refusedFast(t, connectTLS(t, f.Name, &runtime.TLSConfig{CertFile: other.CertFile, KeyFile: other.KeyFile, CAFile: pki.ca.CertFile}),
			"client certificate")
	})
	t.Run("plaintext client", func(t *testing.T) {
		refusedFast(t, connectTLS(t, f.Name, nil), "does the server require TLS?")
	})
	t.Run("client that does not trust the cluster CA", func(t *testing.T) {
		refusedFast(t, connectTLS(t, f.Name, &runtime.TLSConfig{CAFile: tlstest.NewCA(t, "other").CertFile}), "unknown authority")
	})
}

func TestTLSClientCertificateOptional(t *testing.T) {
	pki := newTestPKI(t)
	tc := pki.siloTLS()
	tc.ClientAuth = runtime.ClientCertOptional
	f := start(t, 1, runtime.Config{TLS: tc})
	if _, err := testgrains.NewCounterRef(connectTLS(t, f.Name, &runtime.TLSConfig{CAFile: pki.ca.CertFile}), "k").Add(ctxT(t), 1); err != nil {
		t.Fatalf("a client without a certificate, certificates optional: %v", err)
	}
	other := tlstest.NewCA(t, "other").Issue(t, "intruder")
	// Go's client sends no certificate the server's CA list excludes, so
	// a foreign certificate is as good as none: accepted.
	if _, err := testgrains.NewCounterRef(connectTLS(t, f.Name, &runtime.TLSConfig{CertFile: other.CertFile, KeyFile: other.KeyFile, CAFile: pki.ca.CertFile}), "k").Add(ctxT(t), 1); err != nil {
		t.Fatalf("a client with a foreign certificate, certificates optional: %v", err)
	}
}

// serverSerial dials addr, a silo listener, with TLS (presenting the silo
// certificate) and returns the serial number of the certificate the server
// presented.
func serverSerial(t *testing.T, addr string, pki *testPKI) *big.Int {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.silo.CertFile, pki.silo.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(pki.ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

func TestTLSRotatedSiloCertificate(t *testing.T) {
	pki := newTestPKI(t)
	tc := pki.siloTLS()
	tc.ReloadInterval = 20 * time.Millisecond
	f := start(t, 2, runtime.Config{TLS: tc})
	addr := f.Silos[0].Address()
	if got := serverSerial(t, addr, pki); got.Cmp(pki.silo.Serial) != 0 {
		t.Fatalf("silo presents serial %v, want %v", got, pki.silo.Serial)
	}
	client := connectTLS(t, f.Name, pki.clientTLS())
	if _, err := testgrains.NewCounterRef(client, "before").Add(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}

	rotated := pki.ca.IssueTo(t, "silo", pki.silo.CertFile, pki.silo.KeyFile)
	runtimetest.Eventually(t, 10*time.Second, func() bool { return serverSerial(t, addr, pki).Cmp(rotated.Serial) == 0 },
		"new connections to silo %s never saw the rotated certificate %v", f.Silos[0].ID(), rotated.Serial)
	// Calls on the connections made before, and on new ones (a new
	// client; the silos to each other), keep working.
	for i := range 20 {
		key := fmt.Sprint("after-", i)
		if _, err := testgrains.NewCounterRef(client, key).Add(ctxT(t), 1); err != nil {
			t.Fatalf("old client after the rotation: %v", err)
		}
		if _, err := testgrains.NewCounterRef(connectTLS(t, f.Name, pki.clientTLS()), key).Add(ctxT(t), 1); err != nil {
			t.Fatalf("new client after the rotation: %v", err)
		}
		if _, err := testgrains.NewCounterRef(f.Silos[1].Client(), key).Add(ctxT(t), 1); err != nil {
			t.Fatalf("silo to silo after the rotation: %v", err)
		}
	}
}

// TestTLSSiloOfAnotherCACannotJoin starts a silo whose certificate another
// CA signed (though it trusts the cluster's CA) in a TLS cluster. It
// registers in etcd like any silo, but no call between it and the
// cluster's silo gets through, either way: the cluster's silo refuses its
// client certificate, and refuses its server certificate.
func TestTLSSiloOfAnotherCACannotJoin(t *testing.T) {
	pki := newTestPKI(t)
	f := start(t, 1, runtime.Config{TLS: pki.siloTLS()})
	good := f.Silos[0]
	intruder := tlstest.NewCA(t, "other").Issue(t, "intruder")
	bad := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config: runtime.Config{Cluster: f.Name, Etcd: runtime.EtcdConfig{Endpoints: endpoints},
			TLS: &runtime.TLSConfig{CertFile: intruder.CertFile, KeyFile: intruder.KeyFile, CAFile: pki.ca.CertFile, ClientCAFile: pki.clientCA.CertFile}},
		Register: registerTestGrains(testgrains.NewObserver()),
	}).Silos[0]
	client := connectTLS(t, f.Name, pki.clientTLS())
	ctx := ctxT(t)
	if _, err := client.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) == 2 }); err != nil {
		t.Fatalf("the intruder never joined the membership: %v", err)
	}
	// Each silo activates grains; a placement on the other silo fails to
	// dial and is placed again, so most end up local.
	const keys = 8
	for i := range keys {
		_, _ = testgrains.NewCounterRef(good.Client(), fmt.Sprint("good-", i)).Add(ctx, 1)
		_, _ = testgrains.NewCounterRef(bad.Client(), fmt.Sprint("bad-", i)).Add(ctx, 1)
	}
	hosts := (&procCluster{name: f.Name}).hosts(t, testgrains.CounterType.Name)
	var crossed int
	for key, host := range hosts {
		caller, want := good, "unknown authority" // good refuses bad's server certificate
		if host == good.ID() {
			caller, want = bad, "client certificate" // good refuses bad's client certificate
		}
		_, err := testgrains.NewCounterRef(caller.Client(), key).Add(ctx, 1)
		if err == nil {
			t.Errorf("silo %s called counter %s on silo %s", caller.ID(), key, host)
			continue
		}
		crossed++
		if !errors.Is(err, grain.ErrSiloUnavailable) || !strings.Contains(err.Error(), want) {
			t.Errorf("silo %s calling counter %s on silo %s: %v; want grain.ErrSiloUnavailable saying %q", caller.ID(), key, host, err, want)
		}
	}
	if crossed == 0 || len(hosts) < keys {
		t.Fatalf("directory %v: want grains on both silos", hosts)
	}
}

func TestTLSEtcd(t *testing.T) {
	pki := newTestPKI(t)
	etcdCert := pki.ca.Issue(t, "etcd")
	ctx := ctxT(t)
	// etcd presents a certificate of the cluster CA and takes clients'
	// certificates of the clients' CA.
	srv, err := etcdembed.Start(ctx, etcdembed.Config{CertFile: etcdCert.CertFile, KeyFile: etcdCert.KeyFile, CAFile: pki.clientCA.CertFile, ClientCertAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	eps := srv.Endpoints()
	if !strings.HasPrefix(eps[0], "https://") {
		t.Fatalf("endpoints %v, want https://", eps)
	}
	etcdTLS := pki.clientTLS()
	c := runtimetest.NewCluster(t, 2, runtimetest.Options{
		Config:   runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: eps, TLS: etcdTLS}, TLS: pki.siloTLS()},
		Register: registerTestGrains(testgrains.NewObserver()),
	})
	client, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: c.Name, Etcd: runtime.EtcdConfig{Endpoints: eps, TLS: etcdTLS}, TLS: pki.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for i := range 20 {
		if _, err := testgrains.NewCounterRef(client, fmt.Sprint(i)).Add(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Without a client certificate, or without TLS, etcd does not answer.
	for _, tc := range []struct {
		name string
		etcd runtime.EtcdConfig
		want string
	}{
		{"no client certificate", runtime.EtcdConfig{Endpoints: eps, TLS: &runtime.TLSConfig{CAFile: pki.ca.CertFile}, DialTimeout: 2 * time.Second},
			"certificate required"},
		{"plaintext", runtime.EtcdConfig{Endpoints: []string{strings.Replace(eps[0], "https://", "", 1)}, DialTimeout: 2 * time.Second},
			"serves TLS: set Etcd.TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: c.Name, Etcd: tc.etcd})
			if err == nil {
				c.Close()
				t.Fatal("connected")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Connect failed after %v, dial timeout 2s", d)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

func TestTLSPlaintextWarning(t *testing.T) {
	pki := newTestPKI(t)
	for _, tc := range []struct {
		name   string
		listen string
		tls    *runtime.TLSConfig
		warns  bool
	}{
		{"loopback, plaintext", "127.0.0.1:0", nil, false},
		{"every interface, plaintext", "0.0.0.0:0", nil, true},
		{"every interface, TLS", "0.0.0.0:0", pki.siloTLS(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			start(t, 1, runtime.Config{ListenAddress: tc.listen, TLS: tc.tls, Logger: zap.New(core)})
			got := logs.FilterMessageSnippet("WITHOUT TLS ON A NON-LOOPBACK ADDRESS").Len() > 0
			if got != tc.warns {
				t.Fatalf("warned: %v, want %v (logs: %v)", got, tc.warns, logs.All())
			}
		})
	}
}

func TestTLSPlaintextEtcdWarning(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		warns    bool
	}{
		{"http://192.0.2.1:2379", true}, // TEST-NET-1: never answers
		{"http://127.0.0.1:1", false},
	} {
		t.Run(tc.endpoint, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			s, err := runtime.NewSilo(runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: []string{tc.endpoint}, DialTimeout: 500 * time.Millisecond},
				Logger: zap.New(core)})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(ctxT(t)); err == nil {
				t.Fatal("started without etcd")
			}
			_ = s.Stop(ctxT(t))
			if got := logs.FilterMessageSnippet("etcd is reached WITHOUT TLS on a non-loopback address").Len() > 0; got != tc.warns {
				t.Fatalf("warned: %v, want %v", got, tc.warns)
			}
		})
	}
}

func TestTLSBindFlags(t *testing.T) {
	t.Setenv(runtime.EnvTLSCert, "/env/cert.pem")
	t.Setenv(runtime.EnvTLSKey, "/env/key.pem")
	t.Setenv(runtime.EnvTLSClientAuth, "optional")
	t.Setenv(runtime.EnvEtcdTLSCA, "/env/etcd-ca.pem")
	t.Setenv(runtime.EnvTLSClientCA, "/env/client-ca.pem") // the flag wins
	var cfg runtime.Config
	fs := flag.NewFlagSet("silo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.BindFlags(fs)
	if err := fs.Parse([]string{"-tls-ca", "/flag/ca.pem", "-tls-client-ca", "/flag/client-ca.pem", "-tls-server-name", "silo.internal", "-etcd-tls-cert", "/flag/etcd.pem", "-etcd-tls-key", "/flag/etcd-key.pem"}); err != nil {
		t.Fatal(err)
	}
	want := runtime.TLSConfig{CertFile: "/env/cert.pem", KeyFile: "/env/key.pem", CAFile: "/flag/ca.pem", ClientCAFile: "/flag/client-ca.pem", ServerName: "silo.internal", ClientAuth: runtime.ClientCertOptional}
	if cfg.TLS == nil || *cfg.TLS != want {
		t.Errorf("TLS %+v, want %+v", cfg.TLS, want)
	}
	wantEtcd := runtime.TLSConfig{CertFile: "/flag/etcd.pem", KeyFile: "/flag/etcd-key.pem", CAFile: "/env/etcd-ca.pem"}
	if cfg.Etcd.TLS == nil || *cfg.Etcd.TLS != wantEtcd {
		t.Errorf("Etcd.TLS %+v, want %+v", cfg.Etcd.TLS, wantEtcd)
	}
	if err := fs.Parse([]string{"-tls-client-auth", "sometimes"}); err == nil || !strings.Contains(err.Error(), "require, optional, none") {
		t.Errorf("-tls-client-auth sometimes: %v", err)
	}

	// Without any of them, TLS stays off.
	for _, env := range []string{runtime.EnvTLSCert, runtime.EnvTLSKey, runtime.EnvTLSClientAuth, runtime.EnvTLSClientCA, runtime.EnvEtcdTLSCA} {
		t.Setenv(env, "")
	}
	var plain runtime.Config
	fs = flag.NewFlagSet("silo", flag.ContinueOnError)
	plain.BindFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if plain.TLS != nil || plain.Etcd.TLS != nil {
		t.Errorf("TLS %+v, Etcd.TLS %+v without TLS flags or environment", plain.TLS, plain.Etcd.TLS)
	}
}

func TestTLSConfigValidation(t *testing.T) {
	pki := newTestPKI(t)
	for _, tc := range []struct {
		name string
		cfg  runtime.Config
		want string
	}{
		{"silo without a certificate", runtime.Config{TLS: &runtime.TLSConfig{CAFile: pki.ca.CertFile}}, "a silo needs CertFile and KeyFile"},
		{"silo without a CA", runtime.Config{TLS: &runtime.TLSConfig{CertFile: pki.silo.CertFile, KeyFile: pki.silo.KeyFile}}, "a silo needs CAFile"},
		{"certificate without key", runtime.Config{TLS: &runtime.TLSConfig{CertFile: pki.silo.CertFile, CAFile: pki.ca.CertFile}}, "give both CertFile and KeyFile"},
		{"etcd TLS on an http endpoint", runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: []string{"http://127.0.0.1:2379"}, TLS: &runtime.TLSConfig{}}}, "use https://"},
		{"etcd TLS without endpoints", runtime.Config{Etcd: runtime.EtcdConfig{TLS: &runtime.TLSConfig{}}}, "embedded etcd serves plaintext"},
		{"bad client auth", runtime.Config{TLS: &runtime.TLSConfig{CertFile: pki.silo.CertFile, KeyFile: pki.silo.KeyFile, CAFile: pki.ca.CertFile, ClientAuth: 7}}, "ClientAuth 7"},
		// The gateway's clients have a CA of their own, never the cluster's.
		{"silo without a client CA", runtime.Config{TLS: &runtime.TLSConfig{CertFile: pki.silo.CertFile, KeyFile: pki.silo.KeyFile, CAFile: pki.ca.CertFile}},
			"ClientAuth require: the gateway verifies clients' certificates, so a silo needs ClientCAFile"},
		{"silo without a client CA, certificates optional", runtime.Config{TLS: &runtime.TLSConfig{CertFile: pki.silo.CertFile, KeyFile: pki.silo.KeyFile, CAFile: pki.ca.CertFile, ClientAuth: runtime.ClientCertOptional}},
			"ClientAuth optional: the gateway verifies clients' certificates, so a silo needs ClientCAFile"},
		{"client CA is the cluster CA", runtime.Config{TLS: &runtime.TLSConfig{CertFile: pki.silo.CertFile, KeyFile: pki.silo.KeyFile, CAFile: pki.ca.CertFile, ClientCAFile: pki.ca.CertFile}},
			"is CAFile: every client certificate it signs could talk to the silo listener as a silo"},
		{"client CA without client certificates", runtime.Config{TLS: &runtime.TLSConfig{CertFile: pki.silo.CertFile, KeyFile: pki.silo.KeyFile, CAFile: pki.ca.CertFile, ClientCAFile: pki.clientCA.CertFile, ClientAuth: runtime.ClientCertNone}},
			"ClientCAFile is set but ClientAuth is none"},
		{"client CA for etcd", runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: []string{"https://127.0.0.1:2379"}, TLS: &runtime.TLSConfig{ClientCAFile: pki.clientCA.CertFile}}},
			"Config.Etcd.TLS: ClientCAFile is for a silo's gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runtime.NewSilo(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewSilo: %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// Files that do not load fail Start, naming them.
	s, err := runtime.NewSilo(runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints},
		TLS: &runtime.TLSConfig{CertFile: pki.silo.CertFile, KeyFile: pki.client.KeyFile, CAFile: pki.ca.CertFile, ClientCAFile: pki.clientCA.CertFile}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctxT(t)); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("Start with a mismatched key: %v", err)
	}
	_ = s.Stop(ctxT(t))
	// A client CA bundle that vouches for what the cluster CA does (it
	// holds the cluster CA, or a CA the cluster CA signed) fails Start:
	// the silo listener would take its clients for silos.
	both := filepath.Join(t.TempDir(), "both.pem")
	writeBundle(t, both, pki.clientCA.CertFile, pki.ca.CertFile)
	for _, tc := range []struct{ name, clientCA, want string }{
		{"client CA bundle holding the cluster CA", both, "which is also in CA bundle"},
		{"client CA the cluster CA signed", pki.ca.Intermediate(t, "sub").CertFile, "which chains to CA bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := runtime.NewSilo(runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints},
				TLS: &runtime.TLSConfig{CertFile: pki.silo.CertFile, KeyFile: pki.silo.KeyFile, CAFile: pki.ca.CertFile, ClientCAFile: tc.clientCA}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Stop(ctxT(t))
			if err := s.Start(ctxT(t)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if _, err := runtime.Connect(ctxT(t), runtime.ClientConfig{Gateways: []string{"127.0.0.1:1"}, TLS: &runtime.TLSConfig{CertFile: pki.client.CertFile}}); err == nil ||
		!strings.Contains(err.Error(), "ClientConfig.TLS: give both CertFile and KeyFile") {
		t.Fatalf("Connect with a certificate without key: %v", err)
	}
}

// writeBundle writes the concatenation of the PEM files srcs to path,
// through a temporary file and a rename (a rotation as a reader sees it).
func writeBundle(t *testing.T, path string, srcs ...string) {
	t.Helper()
	var b []byte
	for _, src := range srcs {
		p, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, p...)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
