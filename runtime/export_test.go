package runtime

import (
	"time"

	"google.golang.org/grpc"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
)

// WithDirectory returns cfg with its grain directory replaced by d: a test
// hook for the tests of this package, not part of the API.
func WithDirectory(cfg Config, d directory.Directory) Config {
	cfg.directory = d
	return cfg
}

// ClientSent returns how many envelopes c has sent: a test counts the
// hops of its calls with it.
func ClientSent(c *Client) uint64 { return c.tc.Stats().EnvelopesSent }

// ClientRoute returns the gateway address c remembers for id.
func ClientRoute(c *Client, id grain.ID) (address string, ok bool) {
	h, ok := c.router.routes.Get(id)
	return h.Address, ok
}

// ClientRoutes returns how many grains c remembers the silo of.
func ClientRoutes(c *Client) int { return c.router.routes.Len() }

// SetClientRoute makes c remember the gateway of silo siloID at address
// for id, as if that gateway had answered the last call to id.
func SetClientRoute(c *Client, id grain.ID, siloID, address string) {
	c.router.routes.Put(id, directory.Entry{SiloID: siloID, Address: address})
}

// WithGRPCServerOptions returns cfg with opts added to the gRPC options of
// the silo's listeners: a test hook.
func WithGRPCServerOptions(cfg Config, opts ...grpc.ServerOption) Config {
	cfg.grpcOptions = append(cfg.grpcOptions, opts...)
	return cfg
}

// HashPlacement returns the silo PlaceHash chooses for id over the active
// silos hosting its type in s's view ("" if none).
func HashPlacement(s *Silo, id grain.ID) string {
	c := s.view.Current().Hosting(id.Type)
	if len(c) == 0 {
		return ""
	}
	return rendezvous(id, c).SiloID
}

// Hosting returns how many active silos host typ in s's view.
func Hosting(s *Silo, typ string) int { return len(s.view.Current().Hosting(typ)) }

// SetGatewayMaxConnectionIdle sets how long gateways started from now on
// keep a client connection without a stream; it returns a function that
// restores the previous value.
func SetGatewayMaxConnectionIdle(d time.Duration) (restore func()) {
	old := gatewayMaxConnectionIdle
	gatewayMaxConnectionIdle = d
	return func() { gatewayMaxConnectionIdle = old }
}

// SetAuthTimeout sets how long an Authenticate call may take; it returns a
// function that restores the previous value.
func SetAuthTimeout(d time.Duration) (restore func()) {
	old := authTimeout
	authTimeout = d
	return func() { authTimeout = old }
}
