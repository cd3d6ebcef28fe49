package runtime

import (
	"context"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/peer"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/grain/codec"
	"github.com/granary-rt/granary/runtime/internal/transport"
)

// The decoders of what other processes send a silo or a client: request
// arguments, replies and reminder notices. Bodies are untrusted; they are
// decoded with codec.Unmarshal, and a body that does not decode is an error
// wrapping grain.ErrBadRequest that names the grain type and the method.

// decodeArgs decodes from body the arguments of desc's method with the
// wire name name and the signature fingerprint fp. A method desc does not
// have is grain.ErrUnknownMethod, one whose signature differs
// grain.ErrIncompatible: no other method is chosen, and no arguments are
// decoded into the types of another signature.
func decodeArgs(desc *grain.TypeDesc, name string, fp uint64, body []byte) (*grain.MethodDesc, any, error) {
	md, err := desc.Resolve(name, fp)
	if err != nil {
		return nil, nil, err
	}
	args := md.NewArgs()
	if err := codec.Unmarshal(body, args); err != nil {
		return nil, nil, fmt.Errorf("%w: %s.%s: arguments: %w", grain.ErrBadRequest, desc.Name, methodName(md), err)
	}
	return md, args, nil
}

// methodName names md in errors as the grain's author knows it: the
// reminder method is ReceiveReminder.
func methodName(md *grain.MethodDesc) string {
	if md.Name == grain.ReminderMethod {
		return "ReceiveReminder"
	}
	return md.Name
}

// decodeReply decodes the reply of method md of grain type typ, sent by
// silo. A reply that does not decode is ErrBadRequest, but the call it
// answers ran: its outcome is unknown.
func decodeReply(typ string, md *grain.MethodDesc, silo string, body []byte) (any, error) {
	reply := md.NewReply()
	if err := codec.Unmarshal(body, reply); err != nil {
		return nil, grain.WithOutcome(fmt.Errorf("%w: %s.%s: reply from silo %s: %w", grain.ErrBadRequest, typ, md.Name, silo, err),
			grain.OutcomeUnknown)
	}
	return reply, nil
}

// decodeNotice decodes a reminder notice from another silo.
func decodeNotice(body []byte) (reminderNotice, error) {
	var n reminderNotice
	if err := codec.Unmarshal(body, &n); err != nil {
		return reminderNotice{}, fmt.Errorf("%w: reminder notice: %w", grain.ErrBadRequest, err)
	}
	return n, nil
}

// Malformed requests are logged once per peer, then at most once per
// badRequestLogEvery with the number left out since, so that a peer sending
// a flood of them cannot flood the log.
const (
	badRequestLogEvery = 10 * time.Second
	// badRequestPeers bounds the peers the limiter remembers; beyond it,
	// the table is cleared (each peer then logs once more).
	badRequestPeers = 1024
)

// badRequestLog rate-limits the log of malformed requests per peer (by
// host: a peer that reconnects keeps its limit).
type badRequestLog struct {
	now   func() time.Time
	mu    sync.Mutex
	peers map[string]*badRequestPeer
}

type badRequestPeer struct {
	last       time.Time
	suppressed int
}

// allow reports whether a malformed request from peer is to be logged now,
// and how many were left out since the last one logged.
func (l *badRequestLog) allow(peer string) (ok bool, suppressed int) {
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.peers[peer]
	if p == nil {
		if l.peers == nil || len(l.peers) >= badRequestPeers {
			l.peers = make(map[string]*badRequestPeer)
		}
		l.peers[peer] = &badRequestPeer{last: now}
		return true, 0
	}
	if now.Sub(p.last) < badRequestLogEvery {
		p.suppressed++
		return false, 0
	}
	suppressed, p.suppressed, p.last = p.suppressed, 0, now
	return true, suppressed
}

// peerOf names the host a request came from, "" if unknown.
func peerOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	a := p.Addr.String()
	if host, _, err := net.SplitHostPort(a); err == nil {
		return host
	}
	return a
}

// logBadRequest logs a request that was rejected as malformed, rate-limited
// per peer.
func (s *Silo) logBadRequest(ctx context.Context, req *transport.Envelope, err error) {
	p := peerOf(ctx)
	ok, suppressed := s.badRequests.allow(p)
	if !ok {
		return
	}
	s.log.Warn("malformed request rejected",
		zap.String("peer", p), zap.String("grain_type", req.Target.Type), zap.String("method", req.Method),
		zap.Int("suppressed_since_last", suppressed), zap.Error(err))
}

// recoverRequest is the last line of defence of the per-request path, which
// runs on a transport stream's reader goroutine where a panic would end the
// process: it turns a panic into an error reply. Deferred by handleRequest.
func (s *Silo) recoverRequest(ctx context.Context, req *transport.Envelope, reply transport.Replier) {
	p := recover()
	if p == nil {
		return
	}
	s.log.Error("panic handling a request; recovered",
		zap.String("peer", peerOf(ctx)), zap.Stringer("grain", req.Target), zap.String("method", req.Method),
		zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
	if reply != nil {
		// The transport ignores a second reply if the first was sent. The
		// panic may have come after the call was queued, so it may still
		// run: the outcome is unknown.
		reply.Reply(transport.NewErrorResponse(grain.WithOutcome(
			fmt.Errorf("%w: %s: handling the request panicked", grain.ErrBadRequest, req.Target.Type), grain.OutcomeUnknown)))
	}
}
