package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"go.uber.org/zap"
)

// Defaults for Config.
const (
	DefaultTTL = 10 * time.Second
	// MinTTL is the shortest lease TTL Join accepts. etcd counts lease TTLs
	// in whole seconds and raises short ones to its own minimum (2 s with
	// etcd's default election timeout); the Member then works with the TTL
	// etcd granted.
	MinTTL = time.Second
)

// Config configures a silo's membership.
type Config struct {
	// Prefix is the cluster's key prefix, e.g. "/granary/<cluster>/"; it
	// must end with "/". The silo registers under Prefix+"silos/".
	Prefix string
	// SiloID names the silo in the cluster. Empty: a random id
	// ("silo-" and 12 hex digits). It may not contain "/", spaces or
	// control characters.
	SiloID string
	// Address is where other silos reach this one.
	Address string
	// GatewayAddress is where clients reach this silo; empty if it is not
	// a gateway.
	GatewayAddress string
	// GrainTypes are the grain types the silo hosts.
	GrainTypes []string
	// StatelessTypes are those of GrainTypes that are stateless workers.
	StatelessTypes []string
	// TTL is the lease TTL: how long after its last renewal a silo's
	// registration and its directory entries outlive it. Default 10 s,
	// minimum 1 s, rounded up to whole seconds. The lease is renewed every
	// TTL/3.
	TTL time.Duration
	// FenceMargin is how long before etcd could expire the lease the silo
	// fences itself: fence deadline = send time of the last successful
	// keepalive + TTL - FenceMargin. It absorbs the difference between
	// this machine's clock rate and the etcd leader's, and the time the
	// runtime needs to stop once the deadline passes (a turn already
	// running, a GC pause). Default TTL/5 (2 s of a 10 s TTL); it must be
	// less than TTL/2.
	FenceMargin time.Duration
	// WaitForID makes Join wait, instead of failing at once with
	// ErrSiloIDInUse, while SiloID is still registered by an earlier
	// incarnation whose lease is ending (a crashed or fenced run of the
	// same silo): Join watches the key and registers as soon as etcd
	// deletes it. It waits at most the holder's lease TTL plus 2 s; if the
	// key is still there then, its lease is being renewed by a live silo
	// and Join fails with ErrSiloIDInUse. ctx bounds the wait too.
	WaitForID bool
	// Logger receives membership logs, with a silo_id field. Default: no
	// logs.
	Logger *zap.Logger
}

func (c *Config) validate() error {
	if err := checkPrefix(c.Prefix); err != nil {
		return err
	}
	if c.SiloID == "" {
		c.SiloID = newSiloID()
	}
	if strings.ContainsFunc(c.SiloID, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return fmt.Errorf("cluster: Config.SiloID %q contains \"/\", a space or a control character", c.SiloID)
	}
	switch {
	case c.TTL == 0:
		c.TTL = DefaultTTL
	case c.TTL < MinTTL:
		return fmt.Errorf("cluster: Config.TTL %v is below the minimum %v (etcd leases count whole seconds)", c.TTL, MinTTL)
	}
	if r := c.TTL % time.Second; r != 0 {
		c.TTL += time.Second - r
	}
	switch {
	case c.FenceMargin == 0:
		c.FenceMargin = c.TTL / 5
	case c.FenceMargin < 0:
		return fmt.Errorf("cluster: Config.FenceMargin %v is negative", c.FenceMargin)
	case c.FenceMargin >= c.TTL/2:
		return fmt.Errorf("cluster: Config.FenceMargin %v must be less than TTL/2 (%v): a silo must stay unfenced between two keepalives", c.FenceMargin, c.TTL/2)
	}
	c.GrainTypes = append([]string(nil), c.GrainTypes...)
	c.StatelessTypes = append([]string(nil), c.StatelessTypes...)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

func checkPrefix(prefix string) error {
	if prefix == "" {
		return errors.New("cluster: prefix is empty; want e.g. \"/granary/<cluster>/\"")
	}
	if !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("cluster: prefix %q must end with \"/\"", prefix)
	}
	return nil
}

func newSiloID() string {
	var b [6]byte
	rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	return "silo-" + hex.EncodeToString(b[:])
}
