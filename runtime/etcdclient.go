package runtime

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// etcdClient is an etcd client configuration and the TLS credentials it
// dials with (nil: plaintext).
type etcdClient struct {
	cfg   clientv3.Config
	creds credentials.TransportCredentials
}

// etcdClientConfig is the etcd client configuration of e (named field in
// errors, "Config.Etcd" or "ClientConfig.Etcd") for endpoints. Without TLS
// it warns when an endpoint is not on loopback.
func etcdClientConfig(e EtcdConfig, endpoints []string, field string, log *zap.Logger) (etcdClient, error) {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: e.DialTimeout,
		Username:    e.Username,
		Password:    e.Password,
		Logger:      log.Named("etcd-client"),
	}
	if e.TLS == nil {
		for _, ep := range endpoints {
			if !isLoopback(ep) {
				log.Warn("runtime: etcd is reached WITHOUT TLS on a non-loopback address: anyone on the path can read and "+
					"change the cluster's membership, directory and state; set "+field+".TLS",
					zap.String("endpoint", ep))
				break
			}
		}
		return etcdClient{cfg: cfg}, nil
	}
	creds, err := e.TLS.clientCredentials(field+".TLS", log)
	if err != nil {
		return etcdClient{}, err
	}
	// The etcd client appends DialOptions after its own credentials: these
	// win, so the certificate and CA bundle are reloaded when they change.
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithTransportCredentials(creds))
	return etcdClient{cfg: cfg, creds: creds}, nil
}

// unreachable is the error of etcd not answering within the dial timeout.
// The etcd client only says its deadline passed, so it dials the first
// endpoint itself, with the same credentials, and adds what went wrong
// if that tells: a refused connection, a TLS handshake that fails, a
// server that closes a TLS connection at once (a client certificate it
// does not accept), a TLS server dialed in plaintext.
func (ec etcdClient) unreachable(ctx context.Context, err error) error {
	msg := fmt.Sprintf("runtime: etcd at %v unreachable within %v: %%w", ec.cfg.Endpoints, ec.cfg.DialTimeout)
	if len(ec.cfg.Endpoints) > 0 {
		msg += ec.probe(ctx, ec.cfg.Endpoints[0])
	}
	return fmt.Errorf(msg, err)
}

// probeTimeout bounds the diagnosis of an unreachable etcd.
const probeTimeout = time.Second

func (ec etcdClient) probe(ctx context.Context, endpoint string) string {
	host := endpoint
	if _, rest, ok := strings.Cut(endpoint, "://"); ok {
		host = rest
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Sprintf(" (%v)", err)
	}
	defer conn.Close()
	if ec.creds == nil {
		// Does it speak TLS? Nothing is sent but a ClientHello, so the
		// server's certificate need not be verified to tell.
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // protocol probe only
		if tc.HandshakeContext(ctx) == nil {
			return " (etcd at " + host + " serves TLS: set Etcd.TLS and use an https:// endpoint)"
		}
		return ""
	}
	tconn, _, err := ec.creds.ClientHandshake(ctx, host, conn)
	if err != nil {
		return fmt.Sprintf(" (TLS handshake with %s: %v)", host, err)
	}
	// In TLS 1.3 the server judges the client's certificate after the
	// client's handshake is done: a refusal is an alert on the first read.
	_ = tconn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := tconn.Read(make([]byte, 1)); err != nil {
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			return fmt.Sprintf(" (etcd at %s ended the TLS connection: %v: does it require a client certificate signed by its CA?)", host, err)
		}
	}
	return ""
}
