package runtime_test

// The gateway listener (issue 10, items 2 and 3): what a client may send
// on it, client authentication, and the caller identity grain code sees.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/internal/transport"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// whoType is a grain written by hand (no generator): it reports the caller
// identity its calls carry. (Set in init: its methods refer to it.)
var whoType *grain.TypeDesc

func init() { whoType = newWhoType() }

func newWhoType() *grain.TypeDesc {
	return &grain.TypeDesc{Name: "test.Who", Methods: []grain.MethodDesc{
		{Name: "Who", NewArgs: func() any { return new(struct{}) }, NewReply: func() any { return new(whoReply) },
			Invoke: func(ctx context.Context, impl any, _ any) (any, error) { return impl.(*who).who(ctx), nil }},
		{Name: "Via", NewArgs: func() any { return new(viaArgs) }, NewReply: func() any { return new(whoReply) },
			Invoke: func(ctx context.Context, impl any, args any) (any, error) {
				return impl.(*who).via(ctx, args.(*viaArgs).Key)
			}},
		{Name: "Note", Flags: grain.OneWay, NewArgs: func() any { return new(struct{}) },
			Invoke: func(ctx context.Context, impl any, _ any) (any, error) { impl.(*who).note(ctx); return nil, nil }},
	}}
}

const (
	whoWho = iota
	whoVia
	whoNote
)

type whoReply struct {
	Name, Scheme string
	Has          bool
	Silo         string // the silo hosting the grain
	Noted        string // the identity the last Note carried
}

type viaArgs struct{ Key string }

type who struct {
	c     grain.Context
	silo  *runtime.Silo
	mu    sync.Mutex
	noted string
}

func registerWho(s *runtime.Silo) {
	s.RegisterGrainType(whoType, func(c grain.Context) any { return &who{c: c, silo: s} })
}

func (w *who) who(ctx context.Context) *whoReply {
	id, ok := grain.CallerIdentity(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	return &whoReply{Name: id.Name, Scheme: id.Scheme, Has: ok, Silo: w.silo.ID(), Noted: w.noted}
}

// via asks the grain key who calls it, as a grain-to-grain call.
func (w *who) via(ctx context.Context, key string) (*whoReply, error) {
	r, err := grain.NewRef(w.c, whoType, key).Invoke(ctx, &whoType.Methods[whoWho], &struct{}{})
	if err != nil {
		return nil, err
	}
	return r.(*whoReply), nil
}

func (w *who) note(ctx context.Context) {
	id, _ := grain.CallerIdentity(ctx)
	w.mu.Lock()
	w.noted = id.Name
	w.mu.Unlock()
}

func askWho(ctx context.Context, c grain.Caller, key string) (*whoReply, error) {
	r, err := grain.NewRef(c, whoType, key).Invoke(ctx, &whoType.Methods[whoWho], &struct{}{})
	if err != nil {
		return nil, err
	}
	return r.(*whoReply), nil
}

func askVia(ctx context.Context, c grain.Caller, key, other string) (*whoReply, error) {
	r, err := grain.NewRef(c, whoType, key).Invoke(ctx, &whoType.Methods[whoVia], &viaArgs{Key: other})
	if err != nil {
		return nil, err
	}
	return r.(*whoReply), nil
}

// bearer sends a fixed authorization header, whatever its size, unlike
// the runtime's client: it plays a client that does not play by the rules.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// rawClientWithToken is a transport client that sends token on every
// stream ("" for none).
func rawClientWithToken(t *testing.T, token string) *transport.Client {
	t.Helper()
	cfg := transport.ClientConfig{}
	if token != "" {
		cfg.DialOptions = []grpc.DialOption{grpc.WithPerRPCCredentials(bearer(token))}
	}
	tc, err := transport.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	return tc
}

func checkCode(t *testing.T, what string, err, want error, o grain.Outcome) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
		return
	}
	if got := grain.OutcomeOf(err); got != o {
		t.Errorf("%s: outcome %v, want %v (%v)", what, got, o, err)
	}
}

// internalRequests are what only a silo may send: on a gateway each is
// refused with ErrPermissionDenied and counted by its stat; on the silo
// listener, from a silo peer, each works.
func internalRequests(t *testing.T, clock grain.ID) []struct {
	name string
	env  func() *transport.Envelope
	stat func(runtime.GatewayStats) uint64
} {
	t.Helper()
	tick, err := msgpack.Marshal(&grain.Tick{Name: "forged", Due: time.Now(), Period: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	notice, err := msgpack.Marshal(map[string]string{"Type": clock.Type, "Key": clock.Key, "Name": "forged"})
	if err != nil {
		t.Fatal(err)
	}
	ping := grain.ID{Type: testgrains.ProbeType.Name, Key: "gw-internal"}
	return []struct {
		name string
		env  func() *transport.Envelope
		stat func(runtime.GatewayStats) uint64
	}{
		{"reminder tick", func() *transport.Envelope {
			return &transport.Envelope{Target: clock, Method: grain.ReminderMethod,
				Fingerprint: testgrains.ClockType.Lookup(grain.ReminderMethod).Fingerprint, Body: tick}
		}, func(s runtime.GatewayStats) uint64 { return s.RefusedTicks }},
		{"reminder notice", func() *transport.Envelope {
			return &transport.Envelope{Target: grain.ID{Type: "granary.reminders", Key: "0"}, Method: "$notice", Body: notice}
		}, func(s runtime.GatewayStats) uint64 { return s.RefusedNotices }},
		{"forwarded request", func() *transport.Envelope {
			return &transport.Envelope{Target: ping, Method: probePing.Name, Fingerprint: probePing.Fingerprint, Hops: 1, Body: []byte{0x80}}
		}, func(s runtime.GatewayStats) uint64 { return s.RefusedForwarded }},
	}
}

// probePing is testgrains.Probe.Ping, for envelopes written by hand.
var probePing = testgrains.ProbeType.Lookup("Ping")

func TestGatewayRefusesWhatOnlySilosSend(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	s := f.Silos[0]
	if s.GatewayAddress() == "" || s.GatewayAddress() == s.Address() {
		t.Fatalf("gateway address %q, silo address %q: want a listener of its own", s.GatewayAddress(), s.Address())
	}
	clock := testgrains.NewClockRef(f.Client(), "gw-clock")
	if _, err := clock.Counts(ctx); err != nil { // active, so a tick would reach it at once
		t.Fatal(err)
	}
	tc := newRawClient(t)
	for _, r := range internalRequests(t, clock.ID()) {
		t.Run(r.name, func(t *testing.T) {
			before := r.stat(s.GatewayStats())
			refusedBefore := s.GatewayStats().Refused
			_, err := tc.Call(ctx, s.GatewayAddress(), r.env())
			checkCode(t, "on the gateway", err, grain.ErrPermissionDenied, grain.OutcomeNotRun)
			if err != nil && !strings.Contains(err.Error(), "gateway of silo "+s.ID()) {
				t.Errorf("the error does not name the gateway's silo: %v", err)
			}
			st := s.GatewayStats()
			if r.stat(st) != before+1 || st.Refused != refusedBefore+1 {
				t.Errorf("stats after the refusal: %+v, want this kind and Refused up by one", st)
			}
			// As a one-way request: nothing to answer, still refused and
			// counted.
			if err := tc.Send(ctx, s.GatewayAddress(), r.env()); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return r.stat(s.GatewayStats()) == before+2 }, "one-way %s not counted", r.name)
			// From a silo peer, on the silo listener, it works.
			if _, err := tc.Call(ctx, s.Address(), r.env()); err != nil {
				t.Errorf("on the silo listener: %v", err)
			}
		})
	}
	// The forged ticks reached the grain only through the silo listener:
	// once (the one-way ones are refused on the gateway and the silo
	// listener's one was a call).
	c, err := clock.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Ticks["forged"] != 1 {
		t.Errorf("the grain received %d forged ticks, want 1 (from the silo listener only)", c.Ticks["forged"])
	}

	// Fields only silos set.
	probe := grain.ID{Type: testgrains.ProbeType.Name, Key: "gw-fields"}
	for name, env := range map[string]*transport.Envelope{
		"call chain":         {Target: probe, Method: probePing.Name, Fingerprint: probePing.Fingerprint, Body: []byte{0x80}, Chain: []string{"test.Probe/other"}},
		"claimed identity":   {Target: probe, Method: probePing.Name, Fingerprint: probePing.Fingerprint, Body: []byte{0x80}, Context: map[string]string{"granary.caller": "admin"}},
		"reserved other key": {Target: probe, Method: probePing.Name, Fingerprint: probePing.Fingerprint, Body: []byte{0x80}, Context: map[string]string{"granary.x": "1"}},
	} {
		before := s.GatewayStats().RefusedFields
		_, err := tc.Call(ctx, s.GatewayAddress(), env)
		checkCode(t, name, err, grain.ErrPermissionDenied, grain.OutcomeNotRun)
		if got := s.GatewayStats().RefusedFields; got != before+1 {
			t.Errorf("%s: RefusedFields %d, want %d", name, got, before+1)
		}
	}
	// A silo peer's identity is still checked: one without a name is
	// malformed.
	bad := &transport.Envelope{Target: probe, Method: probePing.Name, Fingerprint: probePing.Fingerprint, Body: []byte{0x80}, Context: map[string]string{"granary.caller": ""}}
	if _, err := tc.Call(ctx, s.Address(), bad); !errors.Is(err, grain.ErrBadRequest) {
		t.Errorf("an identity without a name on the silo listener: %v, want ErrBadRequest", err)
	}
	// What a client may send works: a method call with a request context
	// of its own.
	ok := &transport.Envelope{Target: probe, Method: probePing.Name, Fingerprint: probePing.Fingerprint, Body: []byte{0x80}, Context: map[string]string{"traceparent": "00-1-2-01"}}
	if _, err := tc.Call(ctx, s.GatewayAddress(), ok); err != nil {
		t.Errorf("a plain call on the gateway: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// authCluster starts n silos whose gateways accept the token "s3cret" as
// alice.
func authCluster(t *testing.T, n int, cfg runtime.Config) *fixture {
	t.Helper()
	cfg.Authenticator = runtime.StaticTokens(map[string]string{"s3cret": "alice", "t0ken": "bob"})
	return start(t, n, cfg)
}

func connectTo(t *testing.T, gateways []string, ts runtime.TokenSource) *runtime.Client {
	t.Helper()
	c, err := runtime.Connect(ctxT(t), runtime.ClientConfig{Gateways: gateways, TokenSource: ts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestGatewayAuthentication(t *testing.T) {
	f := authCluster(t, 1, runtime.Config{})
	ctx := ctxT(t)
	s := f.Silos[0]
	gw := []string{s.GatewayAddress()}
	for name, ts := range map[string]runtime.TokenSource{
		"no token":    nil,
		"wrong token": runtime.StaticToken("guess"),
		"empty token": runtime.StaticToken(""),
	} {
		before := s.GatewayStats().Unauthenticated
		_, err := askWho(ctx, connectTo(t, gw, ts), "a")
		checkCode(t, name, err, grain.ErrUnauthenticated, grain.OutcomeNotRun)
		if got := s.GatewayStats().Unauthenticated; got <= before {
			t.Errorf("%s: Unauthenticated %d, want more than %d", name, got, before)
		}
	}
	// The right token: grain code sees who called.
	r, err := askWho(ctx, connectTo(t, gw, runtime.StaticToken("s3cret")), "a")
	if err != nil || !r.Has || r.Name != "alice" || r.Scheme != runtime.SchemeToken {
		t.Fatalf("with alice's token: %+v, %v", r, err)
	}
	r, err = askWho(ctx, connectTo(t, gw, runtime.StaticToken("t0ken")), "a")
	if err != nil || r.Name != "bob" {
		t.Fatalf("with bob's token: %+v, %v", r, err)
	}
	// A token source that fails, or returns a token over the limit: the
	// client does not send it.
	failing := func(context.Context) (string, error) { return "", errors.New("vault sealed") }
	_, err = askWho(ctx, connectTo(t, gw, failing), "a")
	checkCode(t, "failing token source", err, grain.ErrUnauthenticated, grain.OutcomeNotRun)
	if err != nil && !strings.Contains(err.Error(), "vault sealed") {
		t.Errorf("the error does not say why: %v", err)
	}
	huge := strings.Repeat("x", runtime.MaxTokenSize+1)
	_, err = askWho(ctx, connectTo(t, gw, runtime.StaticToken(huge)), "a")
	checkCode(t, "oversize token (client)", err, grain.ErrUnauthenticated, grain.OutcomeNotRun)
	// A client that sends one anyway is refused by the gateway before its
	// authenticator sees it.
	before := s.GatewayStats().Unauthenticated
	probe := grain.ID{Type: testgrains.ProbeType.Name, Key: "auth"}
	err = rawCall(ctx, rawClientWithToken(t, huge), s.GatewayAddress(), probe, probePing.Name, []byte{0x80})
	checkCode(t, "oversize token (gateway)", err, grain.ErrUnauthenticated, grain.OutcomeNotRun)
	if err != nil && !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("the error does not say the token is too long: %v", err)
	}
	if got := s.GatewayStats().Unauthenticated; got != before+1 {
		t.Errorf("Unauthenticated %d, want %d", got, before+1)
	}
	// A malformed authorization header.
	err = rawCall(ctx, rawClientWithToken(t, "two words"), s.GatewayAddress(), probe, probePing.Name, []byte{0x80})
	checkCode(t, "malformed authorization", err, grain.ErrUnauthenticated, grain.OutcomeNotRun)
	// The silo listener does not authenticate clients (silo peers only; see
	// the TLS configuration): the same raw call works there.
	if err := rawCall(ctx, newRawClient(t), s.Address(), probe, probePing.Name, []byte{0x80}); err != nil {
		t.Errorf("silo listener: %v", err)
	}
	// A grain's own ErrUnauthenticated crosses the wire as one.
	if err := testgrains.NewProbeRef(connectTo(t, gw, runtime.StaticToken("s3cret")), "auth").Return(ctx, grain.ErrUnauthenticated.Code()); !errors.Is(err, grain.ErrUnauthenticated) {
		t.Errorf("a grain's ErrUnauthenticated through the gateway: %v", err)
	}
}

func TestGatewayWithoutAuthenticatorIsAnonymous(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	c := connectTo(t, []string{f.Silos[0].GatewayAddress()}, runtime.StaticToken("ignored"))
	r, err := askWho(ctx, c, "anon")
	if err != nil || r.Has || r.Name != "" {
		t.Fatalf("without an authenticator: %+v, %v; want no identity", r, err)
	}
	// In process, an identity set by code of the silo's process is seen.
	r, err = askWho(grain.WithCallerIdentity(ctx, grain.Identity{Name: "local", Scheme: "test"}), f.Client(), "anon")
	if err != nil || r.Name != "local" {
		t.Fatalf("in process: %+v, %v", r, err)
	}
}

// TestCallerIdentityCrossesSilos: one gateway, two silos. Grains placed on
// the other silo are reached through a forwarded call, then through that
// silo's gateway (the redirect the client follows); one-way calls are
// forwarded; grain-to-grain calls carry the identity on. Each sees alice.
func TestCallerIdentityCrossesSilos(t *testing.T) {
	f := authCluster(t, 2, runtime.Config{})
	ctx := ctxT(t)
	gw := f.Silos[0]
	c := connectTo(t, []string{gw.GatewayAddress()}, runtime.StaticToken("s3cret"))
	const grains = 20
	elsewhere := 0
	for i := range grains {
		key := fmt.Sprint("x-", i)
		for round := range 3 { // placed (forwarded or local), redirected, direct
			r, err := askWho(ctx, c, key)
			if err != nil || r.Name != "alice" || r.Scheme != runtime.SchemeToken {
				t.Fatalf("grain %s round %d: %+v, %v", key, round, r, err)
			}
			if round == 0 && r.Silo != gw.ID() {
				elsewhere++
			}
		}
	}
	if elsewhere == 0 {
		t.Fatal("no grain was placed on the other silo")
	}
	st := gw.GatewayStats()
	if st.Forwarded == 0 || st.Redirected == 0 {
		t.Errorf("gateway stats %+v: want forwarded (placements elsewhere) and redirected calls", st)
	}
	// One-way calls are forwarded with the identity.
	for i := range grains {
		if _, err := grain.NewRef(c, whoType, fmt.Sprint("x-", i)).Invoke(ctx, &whoType.Methods[whoNote], &struct{}{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range grains {
		key := fmt.Sprint("x-", i)
		waitFor(t, func() bool {
			r, err := askWho(ctx, c, key)
			return err == nil && r.Noted == "alice"
		}, "grain %s: the one-way call did not carry the identity", key)
	}
	// Grain to grain, across silos too: the identity travels on.
	for i := range grains {
		r, err := askVia(ctx, c, fmt.Sprint("x-", i), fmt.Sprint("x-", (i+1)%grains))
		if err != nil || r.Name != "alice" {
			t.Fatalf("grain x-%d via x-%d: %+v, %v", i, (i+1)%grains, r, err)
		}
	}
	// Under GatewayForward nothing is redirected, and the identity still
	// arrives.
	g := authCluster(t, 2, runtime.Config{GatewayForward: true})
	c = connectTo(t, []string{g.Silos[0].GatewayAddress()}, runtime.StaticToken("s3cret"))
	for i := range grains {
		for range 2 {
			if r, err := askWho(ctx, c, fmt.Sprint("y-", i)); err != nil || r.Name != "alice" {
				t.Fatalf("forwarding gateway: %+v, %v", r, err)
			}
		}
	}
	// (The gateway's silo may not have seen the other in its view for the
	// first calls, and placed them all on itself: call new grains until
	// one lands on the other silo.)
	for i := 0; g.Silos[0].GatewayStats().Forwarded == 0; i++ {
		if i == 1000 {
			t.Fatal("1,000 new grains through the forwarding gateway and none forwarded")
		}
		if r, err := askWho(ctx, c, fmt.Sprint("z-", i)); err != nil || r.Name != "alice" {
			t.Fatalf("forwarding gateway: %+v, %v", r, err)
		}
	}
	if st := g.Silos[0].GatewayStats(); st.Redirected != 0 {
		t.Errorf("forwarding gateway stats %+v: want no redirects", st)
	}
}

// TestGatewayCertificateAuthentication: a gateway serving TLS with
// throwaway certificates (the TLS configuration proper is another
// change's; here it is a gRPC option) takes the client whose verified
// certificate names an accepted subject, and grain code sees it.
func TestGatewayCertificateAuthentication(t *testing.T) {
	ca := runtime.IssueCert(t, "granary test CA", nil, true)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{runtime.IssueCert(t, "silo", &ca, false)},
		ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13}
	f := start(t, 1, runtime.WithGRPCServerOptions(runtime.Config{Authenticator: runtime.CertificateSubjects("alice")},
		grpc.Creds(credentials.NewTLS(serverTLS))))
	ctx := ctxT(t)
	gw := f.Silos[0].GatewayAddress()
	client := func(certs ...tls.Certificate) *transport.Client {
		tc, err := transport.NewClient(transport.ClientConfig{DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(
			credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: certs, MinVersion: tls.VersionTLS13}))}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tc.Close() })
		return tc
	}
	call := func(tc *transport.Client) (*whoReply, error) {
		resp, err := tc.Call(ctx, gw, &transport.Envelope{Target: grain.ID{Type: whoType.Name, Key: "tls"}, Method: "Who", Body: []byte{0x80}})
		if err != nil {
			return nil, err
		}
		var r whoReply
		return &r, msgpack.Unmarshal(resp.Body, &r)
	}
	r, err := call(client(runtime.IssueCert(t, "alice", &ca, false)))
	if err != nil || r.Name != "alice" || r.Scheme != runtime.SchemeTLS {
		t.Fatalf("alice's certificate: %+v, %v", r, err)
	}
	for name, tc := range map[string]*transport.Client{
		"no certificate":            client(),
		"another subject":           client(runtime.IssueCert(t, "mallory", &ca, false)),
		"certificate of another CA": client(runtime.IssueCert(t, "alice", nil, false)),
	} {
		_, err := call(tc)
		if name == "certificate of another CA" && err != nil && !errors.Is(err, grain.ErrUnauthenticated) {
			// The TLS handshake itself refuses it (the server verifies
			// certificates it is given): the stream never opens.
			if !errors.Is(err, grain.ErrSiloUnavailable) {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		checkCode(t, name, err, grain.ErrUnauthenticated, grain.OutcomeNotRun)
	}
}

// TestProcessGateway runs the gateway checks against silo processes: a
// client needs its token; the identity reaches grains on every silo; on a
// gateway, a client holding a valid token still cannot deliver a reminder
// tick or a forwarded request, while a silo peer can on the silo listener.
func TestProcessGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts silo processes")
	}
	name := fmt.Sprintf("proc-gw-%d", time.Now().UnixNano())
	silos := make([]*runtimetest.SiloProcess, 2)
	var wg sync.WaitGroup
	for i := range silos {
		wg.Go(func() {
			silos[i] = runtimetest.StartSiloProcess(t, runtimetest.SiloProcessOptions{Endpoints: endpoints, Cluster: name,
				Env: []string{runtimetest.EnvGatewayTokens + "=s3cret=alice"}})
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ctx := ctxT(t)
	connect := func(ts runtime.TokenSource) *runtime.Client {
		c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}, TokenSource: ts})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.View().WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Gateways()) == len(silos) }); err != nil {
			t.Fatalf("the client never saw %d gateways: %v", len(silos), err)
		}
		return c
	}
	for _, s := range silos {
		if s.Gateway == "" || s.Gateway == s.Addr {
			t.Fatalf("silo %s: gateway %q, silo listener %q", s.ID, s.Gateway, s.Addr)
		}
	}
	_, err := askWho(ctx, connect(nil), "p")
	checkCode(t, "without a token", err, grain.ErrUnauthenticated, grain.OutcomeNotRun)
	_, err = askWho(ctx, connect(runtime.StaticToken("wrong")), "p")
	checkCode(t, "with a wrong token", err, grain.ErrUnauthenticated, grain.OutcomeNotRun)

	c := connect(runtime.StaticToken("s3cret"))
	hosts := map[string]int{}
	for i := range 20 {
		for range 3 {
			r, err := askWho(ctx, c, fmt.Sprint("p-", i))
			if err != nil || r.Name != "alice" {
				t.Fatalf("grain p-%d: %+v, %v", i, r, err)
			}
			hosts[r.Silo]++
		}
	}
	if len(hosts) != len(silos) {
		t.Errorf("grains on %v: want both silos", hosts)
	}
	for i := range 20 {
		if r, err := askVia(ctx, c, fmt.Sprint("p-", i), fmt.Sprint("p-", 19-i)); err != nil || r.Name != "alice" {
			t.Fatalf("grain to grain: %+v, %v", r, err)
		}
	}

	clock := testgrains.NewClockRef(c, "proc-gw-clock")
	if _, err := clock.Counts(ctx); err != nil {
		t.Fatal(err)
	}
	tc := rawClientWithToken(t, "s3cret")
	reqs := internalRequests(t, clock.ID())
	for _, s := range silos {
		for _, r := range reqs {
			_, err := tc.Call(ctx, s.Gateway, r.env())
			checkCode(t, r.name+" on gateway "+s.ID, err, grain.ErrPermissionDenied, grain.OutcomeNotRun)
		}
	}
	// A silo peer on the silo listener: the tick reaches the grain on the
	// silo hosting it (the other answers "not here"), the forwarded
	// request is served.
	peer := newRawClient(t)
	delivered := 0
	for _, s := range silos {
		_, err := peer.Call(ctx, s.Addr, reqs[0].env())
		switch {
		case err == nil:
			delivered++
		case !errors.Is(err, transport.ErrNotHere):
			t.Errorf("tick on silo listener %s: %v", s.ID, err)
		}
		if _, err := peer.Call(ctx, s.Addr, reqs[2].env()); err != nil && !errors.Is(err, transport.ErrNotHere) {
			t.Errorf("forwarded request on silo listener %s: %v", s.ID, err)
		}
	}
	counts, err := clock.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if delivered != 1 || counts.Ticks["forged"] != 1 {
		t.Errorf("%d silo listeners took the tick and the grain counted %d: want 1 and 1 (none from a gateway)", delivered, counts.Ticks["forged"])
	}
}

func TestGatewayConfig(t *testing.T) {
	for _, addr := range []string{"gw.example.com", "10.0.0.1:", "a b:1"} {
		if _, err := runtime.NewSilo(runtime.Config{GatewayAdvertiseAddress: addr}); err == nil || !strings.Contains(err.Error(), "gateway advertise address") {
			t.Errorf("GatewayAdvertiseAddress %q: %v", addr, err)
		}
	}
	for _, cfg := range []runtime.Config{
		{AdvertiseAddress: "10.0.0.7:7000", GatewayAdvertiseAddress: "10.0.0.7:7000"},
		{ListenAddress: "10.0.0.7:7000", GatewayAdvertiseAddress: "10.0.0.7:7000"},
	} {
		if _, err := runtime.NewSilo(cfg); err == nil || !strings.Contains(err.Error(), "silo listener's address") {
			t.Errorf("gateway advertised at the silo listener's address (%+v): %v", cfg, err)
		}
	}
	if _, err := runtime.Connect(ctxT(t), runtime.ClientConfig{Gateways: []string{"127.0.0.1"}}); err == nil || !strings.Contains(err.Error(), `"127.0.0.1" is not host:port`) {
		t.Errorf("a static gateway without a port: %v", err)
	}
	// The advertised address is what goes into the membership record.
	f := start(t, 1, runtime.Config{GatewayAdvertiseAddress: "gw.example.com:7001"})
	s := f.Silos[0]
	if s.GatewayAddress() != "gw.example.com:7001" {
		t.Errorf("GatewayAddress %q", s.GatewayAddress())
	}
	c, err := runtime.Connect(ctxT(t), runtime.ClientConfig{Cluster: f.Name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if gws := c.View().Current().Gateways(); len(gws) != 1 || gws[0].GatewayAddress != "gw.example.com:7001" || gws[0].Address != s.Address() {
		t.Errorf("membership gateways %+v", gws)
	}
}

// An authenticator that panics refuses the client; the silo keeps serving.
func TestPanickingAuthenticatorRefuses(t *testing.T) {
	f := start(t, 1, runtime.Config{Authenticator: runtime.AuthenticatorFunc(func(context.Context, runtime.AuthInfo) (grain.Identity, error) {
		panic("authenticator bug")
	})})
	ctx := ctxT(t)
	_, err := askWho(ctx, connectTo(t, []string{f.Silos[0].GatewayAddress()}, runtime.StaticToken("x")), "p")
	checkCode(t, "panicking authenticator", err, grain.ErrUnauthenticated, grain.OutcomeNotRun)
	if err != nil && !strings.Contains(err.Error(), "authenticator panicked") {
		t.Errorf("the error does not say why: %v", err)
	}
	if _, err := askWho(ctx, f.Client(), "p"); err != nil {
		t.Errorf("the silo stopped serving: %v", err)
	}
}

// TestGatewayWithoutTypeKeepsPlacement: a gateway whose silo does not
// host a grain type does not know the type's placement; a grain it routes
// must still be placed as its type says (PlaceHash here), not at random.
func TestGatewayWithoutTypeKeepsPlacement(t *testing.T) {
	var n atomic.Int32
	c := runtimetest.NewCluster(t, 3, runtimetest.Options{Config: runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}},
		Register: func(s *runtime.Silo) {
			if n.Add(1) == 1 {
				return // the first silo hosts no type
			}
			s.RegisterGrainType(whoType, func(gc grain.Context) any { return &who{c: gc, silo: s} }, grain.WithPlacement(grain.PlaceHash))
		}})
	gw := c.Silos[0]
	waitFor(t, func() bool {
		return runtime.Hosting(gw, whoType.Name) == 2 && runtime.Hosting(c.Silos[1], whoType.Name) == 2 &&
			runtime.Hosting(c.Silos[2], whoType.Name) == 2
	}, "views do not show both hosting silos")
	ctx := ctxT(t)
	for _, cfg := range []runtime.ClientConfig{{Gateways: []string{gw.GatewayAddress()}}, {Gateways: []string{gw.GatewayAddress()}, RouteCacheSize: -1}} {
		cl, err := runtime.Connect(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for i := range 40 {
			id := grain.ID{Type: whoType.Name, Key: fmt.Sprintf("h-%d-%d", cfg.RouteCacheSize, i)}
			r, err := askWho(ctx, cl, id.Key)
			if err != nil {
				t.Fatal(err)
			}
			if want := runtime.HashPlacement(gw, id); r.Silo != want {
				t.Fatalf("grain %s placed on %s through a gateway without its type; PlaceHash says %s", id, r.Silo, want)
			}
		}
	}
}

// TestGatewayClosesConnectionsWithoutStreams: a connection to the gateway
// that opens no stream (or whose stream was refused) does not stay open
// for ever: an unauthenticated client cannot pile connections up.
func TestGatewayClosesConnectionsWithoutStreams(t *testing.T) {
	defer runtime.SetGatewayMaxConnectionIdle(300 * time.Millisecond)()
	f := authCluster(t, 1, runtime.Config{})
	conn, err := net.Dial("tcp", f.Silos[0].GatewayAddress())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the gateway kept a connection without a stream open for 5 s")
			}
			return // closed
		}
		if _, ok := frame.(*http2.GoAwayFrame); ok {
			return
		}
	}
}

// TestSlowAuthenticatorRefuses: an authenticator that does not answer
// refuses the stream at the bound instead of holding it open.
func TestSlowAuthenticatorRefuses(t *testing.T) {
	defer runtime.SetAuthTimeout(200 * time.Millisecond)()
	f := start(t, 1, runtime.Config{Authenticator: runtime.AuthenticatorFunc(func(ctx context.Context, _ runtime.AuthInfo) (grain.Identity, error) {
		<-ctx.Done()
		return grain.Identity{}, ctx.Err()
	})})
	ctx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
	defer cancel()
	_, err := askWho(ctx, connectTo(t, []string{f.Silos[0].GatewayAddress()}, nil), "slow")
	checkCode(t, "slow authenticator", err, grain.ErrUnauthenticated, grain.OutcomeNotRun)
}
