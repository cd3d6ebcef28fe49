package transport

import (
	"context"
	"crypto/tls"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerTLS returns the TLS connection state of the peer whose request ctx
// belongs to (a Handler's ctx), and false if the connection is not TLS. A
// verified client certificate is State.PeerCertificates[0] (and
// State.VerifiedChains is not empty).
func PeerTLS(ctx context.Context) (tls.ConnectionState, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return tls.ConnectionState{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return tls.ConnectionState{}, false
	}
	return info.State, true
}

// tlsHint explains a failed dial whose cause is likely a TLS mismatch
// between this client and the server: "" when it is not.
func (c *Client) tlsHint(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	switch {
	case c.cfg.Credentials == nil && (strings.Contains(msg, "server preface") || strings.Contains(msg, "EOF") ||
		strings.Contains(msg, "connection reset")):
		// A TLS server reads our plaintext HTTP/2 preface as a bad
		// record and closes the connection before saying anything.
		return " (this client dials without TLS: does the server require TLS?)"
	case c.cfg.Credentials != nil && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return " (this client dials with TLS: the server speaks plaintext)"
	case c.cfg.Credentials != nil && (strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate") ||
		strings.Contains(msg, "unknown certificate authority")):
		return " (the server requires a client certificate signed by its CA)"
	case c.cfg.Credentials != nil && (strings.Contains(msg, "server preface") || strings.Contains(msg, "EOF") ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe")):
		// In TLS 1.3 the server judges the client's certificate after
		// the client's handshake is done; its alert may be lost in the
		// close.
		return " (the server closed the connection after the TLS handshake: does it require a client certificate signed by its CA?)"
	}
	return ""
}
