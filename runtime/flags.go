package runtime

import (
	"flag"
	"os"
	"strings"
	"time"
)

// Environment variables read by BindFlags, for silo host commands.
const (
	EnvEtcdEndpoints    = "GRANARY_ETCD_ENDPOINTS" // comma-separated
	EnvCluster          = "GRANARY_CLUSTER"
	EnvSiloID           = "GRANARY_SILO_ID"
	EnvListen           = "GRANARY_LISTEN"
	EnvAdvertise        = "GRANARY_ADVERTISE"
	EnvGateway          = "GRANARY_GATEWAY"
	EnvGatewayAdvertise = "GRANARY_GATEWAY_ADVERTISE"
	EnvLeaseTTL         = "GRANARY_LEASE_TTL" // a Go duration, e.g. 10s
)

// BindFlags defines the usual silo host flags on fs, writing into c, with
// defaults taken from the GRANARY_* environment variables:
//
//	-etcd      GRANARY_ETCD_ENDPOINTS  etcd endpoints, comma-separated (empty: embedded etcd)
//	-cluster   GRANARY_CLUSTER         cluster name
//	-silo-id   GRANARY_SILO_ID         silo id (empty: generated)
//	-listen    GRANARY_LISTEN          gRPC listen address
//	-advertise GRANARY_ADVERTISE       address other silos dial
//	-gateway   GRANARY_GATEWAY         gateway (client) listen address
//	-gateway-advertise GRANARY_GATEWAY_ADVERTISE  address clients dial
//	-lease-ttl GRANARY_LEASE_TTL       silo lease TTL
//
// Flags given on the command line win over the environment.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.Func("etcd", "etcd endpoints, comma-separated; empty starts an embedded etcd (env "+EnvEtcdEndpoints+")",
		func(v string) error { c.Etcd.Endpoints = splitList(v); return nil })
	c.Etcd.Endpoints = splitList(os.Getenv(EnvEtcdEndpoints))
	fs.StringVar(&c.Cluster, "cluster", envOr(EnvCluster, c.Cluster), "cluster name (env "+EnvCluster+")")
	fs.StringVar(&c.SiloID, "silo-id", envOr(EnvSiloID, c.SiloID), "silo id; empty: generated (env "+EnvSiloID+")")
	fs.StringVar(&c.ListenAddress, "listen", envOr(EnvListen, c.ListenAddress), "gRPC listen address (env "+EnvListen+")")
	fs.StringVar(&c.AdvertiseAddress, "advertise", envOr(EnvAdvertise, c.AdvertiseAddress),
		"address other silos dial; empty: the listen address (env "+EnvAdvertise+")")
	fs.StringVar(&c.GatewayListenAddress, "gateway", envOr(EnvGateway, c.GatewayListenAddress),
		"gateway listen address, for clients (env "+EnvGateway+")")
	fs.StringVar(&c.GatewayAdvertiseAddress, "gateway-advertise", envOr(EnvGatewayAdvertise, c.GatewayAdvertiseAddress),
		"address clients dial to reach the gateway; empty: the gateway listen address (env "+EnvGatewayAdvertise+")")
	ttl := c.LeaseTTL
	if d, err := time.ParseDuration(os.Getenv(EnvLeaseTTL)); err == nil {
		ttl = d
	}
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", ttl, "silo lease TTL (env "+EnvLeaseTTL+")")
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
