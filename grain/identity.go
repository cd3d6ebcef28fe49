package grain

import "context"

// Identity is who a call is made for, as a silo's gateway established it
// when the client connected: the authenticator's answer for the client's
// certificate or bearer token. Grain code reads it with CallerIdentity to
// authorise a call.
type Identity struct {
	// Name identifies the principal, as the authenticator named it: a
	// certificate's common name, the user a token stands for. Never empty
	// in an identity the runtime reports.
	Name string
	// Scheme says how the identity was established, for example "token"
	// or "tls" (the runtime's authenticators); an authenticator of your
	// own chooses its own.
	Scheme string
}

// Bounds of an Identity that crosses from one silo to another; the runtime
// refuses longer ones as malformed.
const (
	MaxIdentityName   = 1024
	MaxIdentityScheme = 64
)

type identityKey struct{}

// CallerIdentity returns the authenticated identity of the client on whose
// behalf the call whose context is ctx runs, and whether there is one.
//
// A call that came through a gateway with an authenticator carries the
// identity the authenticator returned, also when the gateway forwarded it
// to the silo hosting the grain. The identity travels on with the calls a
// grain makes with the context its method received (in process and to
// other silos), so a grain deeper in the chain sees the same end user;
// calls made from timers, reminder ticks, OnActivate and OnDeactivate, or
// with a context of their own, carry none. Calls from a gateway without an
// authenticator, and from code in a silo's process (Silo.Client), carry
// none either, unless that code set one with WithCallerIdentity.
func CallerIdentity(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok && id.Name != ""
}

// WithCallerIdentity returns a context whose calls carry id as the
// caller's identity. It is for the runtime (a gateway sets the identity of
// an authenticated client) and for tests; code in a silo's process may use
// it to act for a user it authenticated itself. It only has effect inside
// a cluster: a client process never sends an identity (a gateway refuses
// calls that claim one and sets the one it authenticated). An identity
// with an empty Name is no identity.
func WithCallerIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}
