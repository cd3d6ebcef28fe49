package runtime

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/granary-rt/granary/grain"
)

// Authenticator decides who a client connecting to a silo's gateway is.
// Set one as Config.Authenticator; without one the gateway takes every
// client, anonymously.
type Authenticator interface {
	// Authenticate is called once for every stream a client opens to the
	// gateway (one per client process and silo, re-opened after it
	// breaks), before any call on it is read. It returns the client's
	// identity, which grain code sees through grain.CallerIdentity, or an
	// error that refuses the stream: the client's calls on it fail with
	// grain.ErrUnauthenticated and the error's message. An identity with
	// an empty Name refuses the stream too. ctx ends when the client goes
	// away, and 10 s after the call started: a stream whose
	// authentication takes longer is refused.
	Authenticate(ctx context.Context, info AuthInfo) (grain.Identity, error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, info AuthInfo) (grain.Identity, error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context, info AuthInfo) (grain.Identity, error) {
	return f(ctx, info)
}

// AuthInfo is what a gateway knows about a client when it authenticates
// its stream.
type AuthInfo struct {
	// RemoteAddr is the client's network address.
	RemoteAddr net.Addr
	// TLS is the connection's TLS state when the gateway listens with
	// TLS, nil on a plaintext connection. TLS.VerifiedChains holds the
	// client's certificate chains as the TLS configuration verified them
	// (empty when the client sent no certificate, or the configuration
	// does not verify client certificates); TLS.PeerCertificates holds what
	// the client sent, verified or not.
	TLS *tls.ConnectionState
	// Token is the bearer token the client sent (ClientConfig.TokenSource),
	// without the "Bearer " prefix; "" if it sent none. It is at most
	// MaxTokenSize bytes: the gateway refuses longer ones before asking the
	// authenticator.
	Token string
}

// MaxTokenSize bounds the bearer token a client sends and a gateway
// accepts, in bytes.
const MaxTokenSize = 8 << 10

// Identity schemes of the runtime's authenticators.
const (
	SchemeToken = "token"
	SchemeTLS   = "tls"
)

// ErrNoCredentials is the cause an authenticator gives when the client
// presented nothing it could check (no token, no verified certificate).
var ErrNoCredentials = errors.New("runtime: no credentials")

// StaticTokens returns an authenticator that accepts the bearer tokens of
// tokens, a map from token to the identity's name (Scheme SchemeToken),
// and refuses every other client. Tokens are compared by their SHA-256
// digest, so how long a lookup takes says nothing about how much of a
// token was right. Empty tokens and empty names are ignored.
func StaticTokens(tokens map[string]string) Authenticator {
	byDigest := make(map[[sha256.Size]byte]string, len(tokens))
	for tok, name := range tokens {
		if tok != "" && name != "" {
			byDigest[sha256.Sum256([]byte(tok))] = name
		}
	}
	return AuthenticatorFunc(func(_ context.Context, info AuthInfo) (grain.Identity, error) {
		if info.Token == "" {
			return grain.Identity{}, fmt.Errorf("%w: the gateway wants a bearer token", ErrNoCredentials)
		}
		name, ok := byDigest[sha256.Sum256([]byte(info.Token))]
		if !ok {
			return grain.Identity{}, errors.New("runtime: the bearer token is not one the gateway accepts")
		}
		return grain.Identity{Name: name, Scheme: SchemeToken}, nil
	})
}

// CertificateSubjects returns an authenticator that accepts clients whose
// TLS certificate the gateway's TLS configuration verified (it must ask
// for client certificates: tls.RequireAndVerifyClientCert or
// tls.VerifyClientCertIfGiven with a ClientCAs pool). The identity's name
// is the common name of the certificate's subject (Scheme SchemeTLS). With
// allowed names given, only those common names are accepted; with none,
// every verified certificate with a common name is.
func CertificateSubjects(allowed ...string) Authenticator {
	allowed = slices.Clone(allowed)
	return AuthenticatorFunc(func(_ context.Context, info AuthInfo) (grain.Identity, error) {
		if info.TLS == nil {
			return grain.Identity{}, fmt.Errorf("%w: the gateway wants a TLS client certificate and the connection is not TLS", ErrNoCredentials)
		}
		if len(info.TLS.VerifiedChains) == 0 || len(info.TLS.VerifiedChains[0]) == 0 {
			return grain.Identity{}, fmt.Errorf("%w: the gateway wants a verified TLS client certificate", ErrNoCredentials)
		}
		leaf := info.TLS.VerifiedChains[0][0]
		cn := leaf.Subject.CommonName
		if cn == "" {
			return grain.Identity{}, fmt.Errorf("runtime: the client certificate (subject %q) has no common name", leaf.Subject.String())
		}
		if len(allowed) > 0 && !slices.Contains(allowed, cn) {
			return grain.Identity{}, fmt.Errorf("runtime: the client certificate's common name %q is not one the gateway accepts", cn)
		}
		return grain.Identity{Name: cn, Scheme: SchemeTLS}, nil
	})
}

// FirstOf returns an authenticator that asks each of as in turn and
// accepts the client with the first identity one of them returns, for a
// gateway that takes certificates or tokens. It refuses the client with
// every authenticator's reason when none accepts it.
func FirstOf(as ...Authenticator) Authenticator {
	as = slices.Clone(as)
	return AuthenticatorFunc(func(ctx context.Context, info AuthInfo) (grain.Identity, error) {
		var errs []error
		for _, a := range as {
			id, err := a.Authenticate(ctx, info)
			if err == nil && id.Name != "" {
				return id, nil
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			return grain.Identity{}, errors.New("runtime: no authenticator accepted the client")
		}
		return grain.Identity{}, errors.Join(errs...)
	})
}

// The gateway's side: a gRPC stream interceptor that authenticates a
// stream when it opens, before the transport reads any of it.

// authTimeout bounds an Authenticate call: the stream is refused when it
// takes longer.
var authTimeout = 10 * time.Second

// authInterceptor authenticates each stream with a and puts the identity
// in the stream's context, where every request's context finds it. A
// refused stream ends with codes.Unauthenticated, which the client's
// transport reports as grain.ErrUnauthenticated; onRefused counts it.
func authInterceptor(a Authenticator, onRefused func(peer string, err error)) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		info, err := authInfoOf(ctx)
		var id grain.Identity
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, authTimeout)
			id, err = authenticate(actx, a, info)
			if err == nil && actx.Err() != nil || err != nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("runtime: the authenticator did not answer within %v", authTimeout)
			}
			cancel()
			if err == nil && id.Name == "" {
				err = errors.New("runtime: the authenticator returned an identity without a name")
			}
		}
		if err == nil && (len(id.Name) > grain.MaxIdentityName || len(id.Scheme) > grain.MaxIdentityScheme) {
			err = fmt.Errorf("runtime: the authenticator returned an identity longer than %d bytes (name) or %d (scheme)",
				grain.MaxIdentityName, grain.MaxIdentityScheme)
		}
		if err != nil {
			addr := ""
			if info.RemoteAddr != nil {
				addr = info.RemoteAddr.String()
			}
			onRefused(addr, err)
			return grpcstatus.Errorf(codes.Unauthenticated, "gateway: %v", err)
		}
		return handler(srv, &authedStream{ServerStream: ss, ctx: grain.WithCallerIdentity(ctx, id)})
	}
}

// authenticate calls a, turning a panic into a refusal: a stream's
// handler runs on a goroutine of its own, where a panic would end the
// process.
func authenticate(ctx context.Context, a Authenticator, info AuthInfo) (id grain.Identity, err error) {
	defer func() {
		if p := recover(); p != nil {
			id, err = grain.Identity{}, fmt.Errorf("runtime: the authenticator panicked: %v", p)
		}
	}()
	return a.Authenticate(ctx, info)
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }

// authorizationKey is the metadata key the bearer token travels under.
const authorizationKey = "authorization"

// authInfoOf reads what a stream's context says about the client. The
// token is untrusted input: at most one, at most MaxTokenSize bytes, in the
// form "Bearer <token>".
func authInfoOf(ctx context.Context) (AuthInfo, error) {
	var info AuthInfo
	if p, ok := peer.FromContext(ctx); ok {
		info.RemoteAddr = p.Addr
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			st := ti.State
			info.TLS = &st
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(authorizationKey)
	switch {
	case len(vals) == 0:
		return info, nil
	case len(vals) > 1:
		return info, fmt.Errorf("runtime: the client sent %d authorization headers, want at most one", len(vals))
	}
	v := vals[0]
	if len(v) > len("Bearer ")+MaxTokenSize {
		return info, fmt.Errorf("runtime: the client's bearer token is %d bytes, over the limit of %d", len(v)-len("Bearer "), MaxTokenSize)
	}
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || tok == "" {
		return info, errors.New(`runtime: the client's authorization header is not "Bearer <token>"`)
	}
	info.Token = tok
	return info, nil
}

// The client's side.

// TokenSource returns the bearer token a client presents to gateways. The
// client asks for it whenever it opens a stream to a gateway (its first
// call to that silo, and after the stream broke), so a source may return a
// fresh token each time. ctx bounds the dial.
type TokenSource func(ctx context.Context) (string, error)

// StaticToken returns a TokenSource that always returns token.
func StaticToken(token string) TokenSource {
	return func(context.Context) (string, error) { return token, nil }
}

// tokenCredentials sends a TokenSource's token as gRPC per-RPC
// credentials. Over a connection without TLS it sends the token only to
// loopback addresses: a bearer token in plaintext on a network is anyone's.
type tokenCredentials struct {
	src TokenSource
}

var _ credentials.PerRPCCredentials = tokenCredentials{}

func (c tokenCredentials) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	host := ""
	if len(uri) > 0 {
		if u, err := url.Parse(uri[0]); err == nil {
			host = u.Hostname()
		}
	}
	ri, _ := credentials.RequestInfoFromContext(ctx)
	if ri.AuthInfo == nil || credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity) != nil {
		if !isLoopback(host) {
			return nil, fmt.Errorf("runtime: not sending the bearer token to gateway %s without TLS (only loopback gateways get one in plaintext)", host)
		}
	}
	tok, err := c.src(ctx)
	if err != nil {
		return nil, fmt.Errorf("runtime: token source: %w", err)
	}
	switch {
	case tok == "":
		return nil, nil
	case len(tok) > MaxTokenSize:
		return nil, fmt.Errorf("runtime: the token source returned %d bytes, over the limit of %d", len(tok), MaxTokenSize)
	case strings.ContainsAny(tok, " \r\n"):
		return nil, errors.New("runtime: the token source returned a token with spaces or line breaks")
	}
	return map[string]string{authorizationKey: "Bearer " + tok}, nil
}

// RequireTransportSecurity is false so that loopback gateways work without
// TLS; GetRequestMetadata refuses other gateways without it.
func (tokenCredentials) RequireTransportSecurity() bool { return false }
