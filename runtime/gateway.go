package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime/cluster"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// The gateway: the silo's second listener, for clients.
//
// A client may send grain method calls and nothing else. Of an envelope's
// fields it may set the target, the method, the flags (the silo goes by
// its own method descriptor anyway), the timeout (capped by the silo's
// ResponseTimeout), the arguments, and request-context entries whose keys
// do not start with reservedContextPrefix (values of its own, such as a
// trace context). Only silos may set the rest, so a gateway refuses, with
// grain.ErrPermissionDenied, a request that
//   - targets the runtime's reminder service (reminder notices);
//   - calls grain.ReminderMethod (a reminder tick, which the reminder
//     service alone delivers);
//   - has Hops > 0 (a forwarded request, which tells its receiver it was
//     chosen to host the grain: a client could place activations where it
//     liked);
//   - carries a call chain (which tells a grain which activations wait on
//     the call: a client could fake reentrancy);
//   - carries a request-context key under reservedContextPrefix (the
//     caller's identity travels there between silos: a client must not
//     claim one; the gateway sets the one its authenticator returned).
//
// Every refusal is counted (Silo.GatewayStats) and logged, rate-limited
// per peer host as malformed requests are.

// reservedContextPrefix starts the request-context keys only silos may
// set.
const reservedContextPrefix = grain.ReservedRequestKeyPrefix

// The request-context keys the caller's identity travels under from one
// silo to another.
const (
	identityNameKey   = reservedContextPrefix + "caller"
	identitySchemeKey = reservedContextPrefix + "caller.scheme"
)

// GatewayStats counts what a silo's gateway listener did since the silo
// started.
type GatewayStats struct {
	// Refused counts the requests refused because only silos may send
	// them; RefusedTicks, RefusedNotices, RefusedForwarded and
	// RefusedFields break it down: reminder ticks, reminder-service
	// notices, forwarded requests (Hops > 0), and requests with a call
	// chain or a reserved request-context key.
	Refused, RefusedTicks, RefusedNotices, RefusedForwarded, RefusedFields uint64
	// Unauthenticated counts the streams the authenticator refused.
	Unauthenticated uint64
	// Redirected counts the calls answered with the gateway address of the
	// silo hosting their grain; Forwarded those the gateway sent on to
	// that silo itself (a grain being placed there, a host without a
	// gateway address, a one-way call, or Config.GatewayForward).
	Redirected, Forwarded uint64
}

type gatewayCounters struct {
	refusedTicks, refusedNotices, refusedForwarded, refusedFields atomic.Uint64
	unauthenticated, redirected, forwarded                        atomic.Uint64
}

// GatewayStats returns the counts of the silo's gateway listener.
func (s *Silo) GatewayStats() GatewayStats {
	c := &s.gwStats
	st := GatewayStats{
		RefusedTicks:     c.refusedTicks.Load(),
		RefusedNotices:   c.refusedNotices.Load(),
		RefusedForwarded: c.refusedForwarded.Load(),
		RefusedFields:    c.refusedFields.Load(),
		Unauthenticated:  c.unauthenticated.Load(),
		Redirected:       c.redirected.Load(),
		Forwarded:        c.forwarded.Load(),
	}
	st.Refused = st.RefusedTicks + st.RefusedNotices + st.RefusedForwarded + st.RefusedFields
	return st
}

// GatewayAddress returns the address clients dial to reach this silo's
// gateway (valid after Start).
func (s *Silo) GatewayAddress() string { return s.gwAddr }

// refuseOnGateway returns the counter of the refusal and why a client may
// not send req; nil, nil if it may.
func (s *Silo) refuseOnGateway(req *transport.Envelope) (*atomic.Uint64, error) {
	c := &s.gwStats
	deny := func(n *atomic.Uint64, format string, args ...any) (*atomic.Uint64, error) {
		return n, fmt.Errorf("%w: gateway of silo %s: %s", grain.ErrPermissionDenied, s.id, fmt.Sprintf(format, args...))
	}
	switch {
	case req.Target.Type == reminderServiceType:
		return deny(&c.refusedNotices, "a client may not send reminder-service notices (%s)", req.Target)
	case req.Method == grain.ReminderMethod:
		return deny(&c.refusedTicks, "a client may not deliver reminder ticks (%s.ReceiveReminder)", req.Target)
	case strings.HasPrefix(req.Method, "$"):
		// Wire names starting with '$' are the runtime's own.
		return deny(&c.refusedFields, "method %q of the call to %s is reserved for silos", req.Method, req.Target)
	case req.Hops > 0:
		return deny(&c.refusedForwarded, "a client may not send forwarded requests (call to %s with %d hops)", req.Target, req.Hops)
	case len(req.Chain) > 0:
		return deny(&c.refusedFields, "a client may not send a call chain (call to %s)", req.Target)
	}
	for k := range req.Context {
		if strings.HasPrefix(k, reservedContextPrefix) {
			return deny(&c.refusedFields, "request-context key %q of the call to %s is reserved for silos", k, req.Target)
		}
	}
	return nil, nil
}

// handleGatewayRequest is the transport.Handler of the gateway listener:
// a call from a client. Calls a client may not send are refused; the
// others are served as handleRequest serves a silo's, except that a call
// for a grain hosted elsewhere is answered with the host's gateway address
// or forwarded to the host, and the caller's identity is the one the
// stream authenticated with, never one the request claims.
func (s *Silo) handleGatewayRequest(ctx context.Context, req *transport.Envelope, reply transport.Replier) {
	if n, err := s.refuseOnGateway(req); err != nil {
		n.Add(1)
		p := peerOf(ctx)
		if ok, suppressed := s.gwRefusals.allow(p); ok {
			s.log.Warn("gateway: refused a request only silos may send", zap.String("peer", p),
				zap.Int("suppressed_since_last", suppressed), zap.Error(err))
		}
		if reply != nil {
			reply.Reply(transport.NewErrorResponse(err))
		}
		return
	}
	if reply != nil {
		reply = &gatewayReplier{Replier: reply, s: s}
	}
	s.serveRequest(ctx, req, reply, true)
}

// gatewayReplier answers a client: a not-here answer points to the
// gateway of the silo it names, never to a silo listener.
type gatewayReplier struct {
	transport.Replier
	s *Silo
}

func (r *gatewayReplier) Reply(resp *transport.Envelope) {
	if resp != nil && resp.Status == transport.StatusNotHere {
		resp.Redirect.Address = r.s.gatewayOf(resp.Redirect.SiloID)
	}
	r.Replier.Reply(resp)
}

// gatewayOf returns the gateway address of the active silo siloID, "" if
// it is unknown or the silo is not active. The address comes from the
// silo's membership record: any string its silo wrote, so it is checked to
// look like host:port before a client is sent there.
func (s *Silo) gatewayOf(siloID string) string {
	if siloID == "" || s.view == nil {
		return ""
	}
	if siloID == s.id {
		return s.gwAddr
	}
	info, ok := s.view.Current().Get(siloID)
	if !ok || info.Status != cluster.StatusActive || !validAddress(info.GatewayAddress) {
		return ""
	}
	return info.GatewayAddress
}

// routeFromGateway answers a client's call for a grain this silo does not
// host, once resolve chose the host rt. A grain active on another silo
// whose gateway is known gets a redirect there: the client then calls
// that gateway directly, one hop. A grain being placed on another silo
// (rt.hops > 0: only a silo may tell another to host a grain), a host
// whose record has no usable gateway address, a one-way call (nobody
// reads its answer) and every call under Config.GatewayForward are
// forwarded over the silo-to-silo path, with the caller's identity and
// request values.
func (s *Silo) routeFromGateway(ctx context.Context, req *transport.Envelope, reply transport.Replier, rt route) {
	if reply != nil && rt.hops == 0 && !s.cfg.GatewayForward {
		if gw := s.gatewayOf(rt.silo.SiloID); gw != "" {
			s.gwStats.redirected.Add(1)
			reply.Reply(transport.NewNotHereResponse(rt.silo.SiloID, gw))
			return
		}
	}
	s.gwStats.forwarded.Add(1)
	env := &transport.Envelope{Target: req.Target, Method: req.Method, Fingerprint: req.Fingerprint, Flags: req.Flags, Hops: rt.hops,
		Context: requestContext(ctx, true), Body: req.Body}
	if reply == nil {
		env.Timeout = req.Timeout
		if err := s.tc.Send(ctx, rt.silo.Address, env); err != nil {
			s.warnDropped("gateway: one-way call not forwarded", zap.Stringer("grain", req.Target),
				zap.String("silo", rt.silo.SiloID), zap.Error(err))
		}
		return
	}
	resp, err := s.tc.Call(ctx, rt.silo.Address, env)
	if to, ok := s.followOnGateway(rt, err); ok {
		// Where the silo that placed the grain put it, or where it is
		// active: told to the client, it would send it to a gateway it
		// may not reach. (Still one forwarded call.)
		env.Hops = 1
		resp, err = s.tc.Call(ctx, to.Address, env)
	}
	switch {
	case err == nil:
		reply.Reply(resp)
	case errors.Is(err, transport.ErrNotSent):
		// The host could not be dialed (it just left?): the client
		// routes the call again.
		reply.Reply(transport.NewNotHereResponse("", ""))
	default:
		reply.Reply(encodeResponse(nil, err))
	}
}

// followOnGateway says whether the gateway sends a call it forwarded on
// rt (hops 0) to the silo the not-here answer err names, itself, with hops 1,
// instead of passing the answer to the client: under
// Config.GatewayForward, or when that silo has no usable gateway
// address. The silo forwarded to hosts the type (a gateway that does not
// host it forwards only to one that does), so its answer is its placement
// or the grain's host.
func (s *Silo) followOnGateway(rt route, err error) (cluster.SiloInfo, bool) {
	var nh *transport.NotHereError
	if rt.hops > 0 || !errors.As(err, &nh) {
		return cluster.SiloInfo{}, false
	}
	rd := nh.Redirect
	if rd.SiloID == "" || rd.SiloID == s.id || !validAddress(rd.Address) ||
		!s.cfg.GatewayForward && s.gatewayOf(rd.SiloID) != "" {
		return cluster.SiloInfo{}, false
	}
	return cluster.SiloInfo{SiloID: rd.SiloID, Address: rd.Address}, true
}

// identityContext returns the request context that carries ctx's caller
// identity to another silo, nil if ctx has none.
func identityContext(ctx context.Context) map[string]string {
	id, ok := grain.CallerIdentity(ctx)
	if !ok {
		return nil
	}
	m := map[string]string{identityNameKey: id.Name}
	if id.Scheme != "" {
		m[identitySchemeKey] = id.Scheme
	}
	return m
}

// withEnvelopeIdentity returns ctx with the caller identity a silo peer
// sent in req's request context, if any. It is still input from the
// network: an identity without a name or over the bounds is malformed.
func withEnvelopeIdentity(ctx context.Context, req *transport.Envelope) (context.Context, error) {
	name, ok := req.Context[identityNameKey]
	scheme := req.Context[identitySchemeKey]
	switch {
	case !ok && scheme == "":
		return ctx, nil
	case name == "" || len(name) > grain.MaxIdentityName || len(scheme) > grain.MaxIdentityScheme:
		return ctx, fmt.Errorf("%w: call to %s: caller identity of %d bytes (scheme %d bytes): want 1 to %d (scheme at most %d)",
			grain.ErrBadRequest, req.Target, len(name), len(scheme), grain.MaxIdentityName, grain.MaxIdentityScheme)
	}
	return grain.WithCallerIdentity(ctx, grain.Identity{Name: name, Scheme: scheme}), nil
}

// validAddress reports whether addr, read from a membership record, looks
// like a host:port a client can dial.
func validAddress(addr string) bool {
	if addr == "" || len(addr) > 256 {
		return false
	}
	host, port, err := net.SplitHostPort(addr)
	return err == nil && host != "" && port != "" && !strings.ContainsAny(addr, " /\\\r\n\t")
}

// gatewayMaxHeaderList bounds the request headers of a stream a client
// opens (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE), bearer token included: far
// below gRPC's default of 16 MiB.
const gatewayMaxHeaderList = 64 << 10

// gatewayMaxConnectionIdle is how long a gateway keeps a client
// connection without an open stream (one whose stream the authenticator
// refused, or that never opened one): clients keep their stream open
// while they use a connection, and re-dial after.
var gatewayMaxConnectionIdle = 2 * time.Minute

// gatewayServerConfig returns the transport configuration of the gateway
// listener: the silo listener's, with the authenticator in front of every
// stream, client headers bounded, and connections without a stream
// closed after gatewayMaxConnectionIdle.
func (s *Silo) gatewayServerConfig(base transport.ServerConfig, creds credentials.TransportCredentials) transport.ServerConfig {
	c := base
	c.Credentials = creds
	c.MaxConnectionIdle = gatewayMaxConnectionIdle
	c.GRPCOptions = append(slices.Clip(base.GRPCOptions), grpc.MaxHeaderListSize(gatewayMaxHeaderList))
	if s.cfg.Authenticator != nil {
		c.GRPCOptions = append(c.GRPCOptions, grpc.ChainStreamInterceptor(authInterceptor(s.cfg.Authenticator, s.unauthenticated)))
	}
	return c
}

// unauthenticated counts and logs a stream the authenticator refused.
func (s *Silo) unauthenticated(peer string, err error) {
	s.gwStats.unauthenticated.Add(1)
	host := peer
	if h, _, herr := net.SplitHostPort(peer); herr == nil {
		host = h
	}
	if ok, suppressed := s.gwRefusals.allow(host); ok {
		s.log.Warn("gateway: refused a client that did not authenticate", zap.String("peer", peer),
			zap.Int("suppressed_since_last", suppressed), zap.Error(err))
	}
}

// warnOpenGateway warns when the gateway is open to the network: no TLS or
// no authenticator on an address that is not loopback.
func (s *Silo) warnOpenGateway() {
	addr := s.gwLis.Addr().String()
	if isLoopback(addr) {
		return
	}
	if s.cfg.TLS == nil {
		s.log.Warn("runtime: GATEWAY LISTENS WITHOUT TLS ON A NON-LOOPBACK ADDRESS: clients' calls and tokens cross the network in plaintext; set Config.TLS (flags -tls-cert, -tls-key, -tls-ca, -tls-client-ca)",
			zap.String("gateway", addr))
	}
	if s.cfg.Authenticator == nil {
		s.log.Warn("gateway: listening beyond loopback without an authenticator: anyone who reaches it can call any grain (set Config.Authenticator)",
			zap.String("gateway", addr))
	}
}
