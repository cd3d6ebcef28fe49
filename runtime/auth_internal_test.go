package runtime

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// What a client sends in its authorization header is untrusted: each
// malformed form is refused before an authenticator sees it.
func TestAuthInfoOfRejectsMalformedAuthorization(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9), Port: 5000}
	for _, tc := range []struct {
		name    string
		values  []string
		token   string
		wantErr string
	}{
		{"none", nil, "", ""},
		{"bearer", []string{"Bearer abc"}, "abc", ""},
		{"lower-case scheme", []string{"bearer abc"}, "abc", ""},
		{"two headers", []string{"Bearer a", "Bearer b"}, "", "2 authorization headers"},
		{"basic", []string{"Basic dXNlcjpwdw=="}, "", "not \"Bearer <token>\""},
		{"no token", []string{"Bearer "}, "", "not \"Bearer <token>\""},
		{"no scheme", []string{"abc"}, "", "not \"Bearer <token>\""},
		{"at the limit", []string{"Bearer " + strings.Repeat("t", MaxTokenSize)}, strings.Repeat("t", MaxTokenSize), ""},
		{"over the limit", []string{"Bearer " + strings.Repeat("t", MaxTokenSize+1)}, "", "over the limit"},
		{"huge", []string{strings.Repeat("t", 1<<20)}, "", "over the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: addr})
			if tc.values != nil {
				md := metadata.MD{}
				md[authorizationKey] = tc.values
				ctx = metadata.NewIncomingContext(ctx, md)
			}
			info, err := authInfoOf(ctx)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("authInfoOf = %+v, %v; want an error containing %q", info, err, tc.wantErr)
				}
				return
			}
			if err != nil || info.Token != tc.token || info.RemoteAddr != addr || info.TLS != nil {
				t.Fatalf("authInfoOf = %+v, %v; want token %q", info, err, tc.token)
			}
		})
	}
}

// A bearer token leaves the client in plaintext only for a loopback
// gateway, and never over MaxTokenSize.
func TestTokenCredentials(t *testing.T) {
	plain := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{
		AuthInfo: credentials.TLSInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}})
	secure := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{
		AuthInfo: credentials.TLSInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}})
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		uri     string
		src     TokenSource
		want    string
		wantErr string
	}{
		{"loopback, plaintext", plain, "https://127.0.0.1:7001/granary.Transport", StaticToken("abc"), "Bearer abc", ""},
		{"localhost, plaintext", plain, "https://localhost:7001/granary.Transport", StaticToken("abc"), "Bearer abc", ""},
		{"ipv6 loopback, plaintext", plain, "https://[::1]:7001/granary.Transport", StaticToken("abc"), "Bearer abc", ""},
		{"network, plaintext", plain, "https://10.0.0.1:7001/granary.Transport", StaticToken("abc"), "", "without TLS"},
		{"network, no request info", context.Background(), "https://10.0.0.1:7001/granary.Transport", StaticToken("abc"), "", "without TLS"},
		{"network, TLS", secure, "https://10.0.0.1:7001/granary.Transport", StaticToken("abc"), "Bearer abc", ""},
		{"empty token", secure, "https://10.0.0.1:7001/x", StaticToken(""), "", ""},
		{"oversize", secure, "https://10.0.0.1:7001/x", StaticToken(strings.Repeat("t", MaxTokenSize+1)), "", "over the limit"},
		{"line break", secure, "https://10.0.0.1:7001/x", StaticToken("a\r\nX-Evil: 1"), "", "line breaks"},
		{"failing source", secure, "https://10.0.0.1:7001/x",
			func(context.Context) (string, error) { return "", errors.New("no token today") }, "", "no token today"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md, err := tokenCredentials{src: tc.src}.GetRequestMetadata(tc.ctx, tc.uri)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("GetRequestMetadata = %v, %v; want an error containing %q", md, err, tc.wantErr)
				}
				return
			}
			if err != nil || md[authorizationKey] != tc.want {
				t.Fatalf("GetRequestMetadata = %v, %v; want %q", md, err, tc.want)
			}
		})
	}
}

func TestStaticTokens(t *testing.T) {
	a := StaticTokens(map[string]string{"s3cret": "alice", "": "nobody", "orphan": ""})
	for _, tc := range []struct {
		token, want string
	}{{"s3cret", "alice"}, {"s3cre", ""}, {"s3cret ", ""}, {"", ""}, {"orphan", ""}} {
		id, err := a.Authenticate(context.Background(), AuthInfo{Token: tc.token})
		if id.Name != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("token %q: %+v, %v; want %q", tc.token, id, err, tc.want)
		}
	}
	if _, err := a.Authenticate(context.Background(), AuthInfo{}); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("no token: %v, want ErrNoCredentials", err)
	}
}

// IssueCert returns a throwaway certificate for cn signed by ca (self-signed if ca is
// nil), and its key; valid for 127.0.0.1. Exported for the tests of runtime_test.
func IssueCert(t *testing.T, cn string, ca *tls.Certificate, isCA bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"granary test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		IsCA:        isCA, BasicConstraintsValid: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.Leaf, ca.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestCertificateSubjects(t *testing.T) {
	ca := IssueCert(t, "test CA", nil, true)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Leaf)
	verified := func(cn string) *tls.ConnectionState {
		c := IssueCert(t, cn, &ca, false)
		chains, err := c.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			t.Fatal(err)
		}
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.Leaf}, VerifiedChains: chains}
	}
	unverified := IssueCert(t, "alice", nil, false)
	for _, tc := range []struct {
		name    string
		a       Authenticator
		tls     *tls.ConnectionState
		want    string
		wantErr string
	}{
		{"verified", CertificateSubjects(), verified("alice"), "alice", ""},
		{"allowed", CertificateSubjects("alice", "bob"), verified("bob"), "bob", ""},
		{"not allowed", CertificateSubjects("alice"), verified("mallory"), "", `"mallory" is not one`},
		{"no common name", CertificateSubjects(), verified(""), "", "no common name"},
		{"plaintext", CertificateSubjects(), nil, "", "not TLS"},
		{"sent but not verified", CertificateSubjects(), &tls.ConnectionState{PeerCertificates: []*x509.Certificate{unverified.Leaf}}, "", "verified TLS client certificate"},
		{"token or certificate", FirstOf(StaticTokens(map[string]string{"k": "tok"}), CertificateSubjects()), verified("carol"), "carol", ""},
		{"neither", FirstOf(StaticTokens(map[string]string{"k": "tok"}), CertificateSubjects()), nil, "", "bearer token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.a.Authenticate(context.Background(), AuthInfo{TLS: tc.tls})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Authenticate = %+v, %v; want an error containing %q", id, err, tc.wantErr)
				}
				return
			}
			if err != nil || id.Name != tc.want || id.Scheme != SchemeTLS {
				t.Fatalf("Authenticate = %+v, %v; want %q over tls", id, err, tc.want)
			}
		})
	}
}

// An identity a silo peer sends is still input from the network.
func TestWithEnvelopeIdentity(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ctx     map[string]string
		want    grain.Identity
		has     bool
		wantErr bool
	}{
		{"none", nil, grain.Identity{}, false, false},
		{"other keys", map[string]string{"traceparent": "x"}, grain.Identity{}, false, false},
		{"name", map[string]string{identityNameKey: "alice"}, grain.Identity{Name: "alice"}, true, false},
		{"name and scheme", map[string]string{identityNameKey: "alice", identitySchemeKey: "tls"}, grain.Identity{Name: "alice", Scheme: "tls"}, true, false},
		{"empty name", map[string]string{identityNameKey: ""}, grain.Identity{}, false, true},
		{"scheme without name", map[string]string{identitySchemeKey: "tls"}, grain.Identity{}, false, true},
		{"long name", map[string]string{identityNameKey: strings.Repeat("a", grain.MaxIdentityName+1)}, grain.Identity{}, false, true},
		{"long scheme", map[string]string{identityNameKey: "a", identitySchemeKey: strings.Repeat("s", grain.MaxIdentityScheme+1)}, grain.Identity{}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &transport.Envelope{Target: grain.ID{Type: "t", Key: "k"}, Context: tc.ctx}
			ctx, err := withEnvelopeIdentity(context.Background(), req)
			if tc.wantErr {
				if !errors.Is(err, grain.ErrBadRequest) {
					t.Fatalf("err = %v, want ErrBadRequest", err)
				}
				return
			}
			id, ok := grain.CallerIdentity(ctx)
			if err != nil || ok != tc.has || id != tc.want {
				t.Fatalf("identity %+v %v, err %v; want %+v %v", id, ok, err, tc.want, tc.has)
			}
		})
	}
	// And back: what a silo sends for an identity.
	ctx := grain.WithCallerIdentity(context.Background(), grain.Identity{Name: "alice", Scheme: "token"})
	if m := identityContext(ctx); len(m) != 2 || m[identityNameKey] != "alice" || m[identitySchemeKey] != "token" {
		t.Errorf("identityContext = %v", m)
	}
	if m := identityContext(context.Background()); m != nil {
		t.Errorf("identityContext without an identity = %v", m)
	}
}

func TestValidAddress(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7000": true, "[::1]:7000": true, "gw.example.com:443": true,
		"": false, "127.0.0.1": false, ":7000": false, "host:": false, "a b:1": false,
		"host:1/path": false, strings.Repeat("h", 300) + ":1": false, "x\n:1": false,
	} {
		if got := validAddress(addr); got != want {
			t.Errorf("validAddress(%q) = %v, want %v", addr, got, want)
		}
	}
}

// FuzzAuthorization feeds authInfoOf arbitrary authorization headers: it
// never panics, and a token it accepts is within the bound and has no
// space.
func FuzzAuthorization(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer x", "Basic a", "Bearer ", "", " ", "Bearer a b", strings.Repeat("B", MaxTokenSize+10)} {
		f.Add(s, "")
		f.Add(s, "Bearer second")
	}
	f.Fuzz(func(t *testing.T, v, second string) {
		md := metadata.MD{authorizationKey: []string{v}}
		if second != "" {
			md[authorizationKey] = append(md[authorizationKey], second)
		}
		info, err := authInfoOf(metadata.NewIncomingContext(context.Background(), md))
		if err != nil {
			return
		}
		if len(md[authorizationKey]) > 1 || len(info.Token) > MaxTokenSize || info.Token == "" {
			t.Fatalf("accepted %q (of %d headers)", info.Token, len(md[authorizationKey]))
		}
	})
}
