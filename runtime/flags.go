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

	// Config.TLS: setting any of these turns TLS on.
	EnvTLSCert       = "GRANARY_TLS_CERT"        // PEM certificate file
	EnvTLSKey        = "GRANARY_TLS_KEY"         // PEM private key file
	EnvTLSCA         = "GRANARY_TLS_CA"          // PEM CA bundle: the cluster's CA
	EnvTLSClientCA   = "GRANARY_TLS_CLIENT_CA"   // PEM CA bundle of clients' certificates
	EnvTLSServerName = "GRANARY_TLS_SERVER_NAME" // name other silos' certificates hold
	EnvTLSClientAuth = "GRANARY_TLS_CLIENT_AUTH" // require, optional or none

	// Config.Etcd.TLS: setting any of these turns TLS to etcd on.
	EnvEtcdTLSCert       = "GRANARY_ETCD_TLS_CERT"
	EnvEtcdTLSKey        = "GRANARY_ETCD_TLS_KEY"
	EnvEtcdTLSCA         = "GRANARY_ETCD_TLS_CA"
	EnvEtcdTLSServerName = "GRANARY_ETCD_TLS_SERVER_NAME"
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
//	-tls-cert, -tls-key, -tls-ca     GRANARY_TLS_CERT, _KEY, _CA      Config.TLS files (any of them: TLS on)
//	-tls-client-ca                   GRANARY_TLS_CLIENT_CA            Config.TLS.ClientCAFile
//	-tls-server-name                 GRANARY_TLS_SERVER_NAME          Config.TLS.ServerName
//	-tls-client-auth                 GRANARY_TLS_CLIENT_AUTH          Config.TLS.ClientAuth: require, optional, none
//	-etcd-tls-cert, -etcd-tls-key, -etcd-tls-ca  GRANARY_ETCD_TLS_CERT, _KEY, _CA  Config.Etcd.TLS files
//	-etcd-tls-server-name            GRANARY_ETCD_TLS_SERVER_NAME     Config.Etcd.TLS.ServerName
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

	silo := func() *TLSConfig {
		if c.TLS == nil {
			c.TLS = &TLSConfig{}
		}
		return c.TLS
	}
	etcd := func() *TLSConfig {
		if c.Etcd.TLS == nil {
			c.Etcd.TLS = &TLSConfig{}
		}
		return c.Etcd.TLS
	}
	bindTLSString(fs, "tls-cert", EnvTLSCert, "PEM certificate the silo presents to clients and other silos; turns TLS on", silo,
		func(t *TLSConfig) *string { return &t.CertFile })
	bindTLSString(fs, "tls-key", EnvTLSKey, "PEM private key of -tls-cert", silo,
		func(t *TLSConfig) *string { return &t.KeyFile })
	bindTLSString(fs, "tls-ca", EnvTLSCA, "PEM CA bundle of the cluster: other silos' certificates must chain to it; it must sign silos only", silo,
		func(t *TLSConfig) *string { return &t.CAFile })
	bindTLSString(fs, "tls-client-ca", EnvTLSClientCA, "PEM CA bundle clients' certificates must chain to on the gateway; distinct from -tls-ca", silo,
		func(t *TLSConfig) *string { return &t.ClientCAFile })
	bindTLSString(fs, "tls-server-name", EnvTLSServerName, "name other silos' certificates must hold; empty: the host dialed", silo,
		func(t *TLSConfig) *string { return &t.ServerName })
	clientAuth := func(v string) error { return silo().ClientAuth.UnmarshalText([]byte(v)) }
	if v := os.Getenv(EnvTLSClientAuth); v != "" {
		if err := clientAuth(v); err != nil {
			c.TLS.ClientAuth = -1 // Config validation rejects it
		}
	}
	fs.Func("tls-client-auth", "client certificates the gateway requires (signed by -tls-client-ca): require, optional or none (env "+EnvTLSClientAuth+")", clientAuth)
	bindTLSString(fs, "etcd-tls-cert", EnvEtcdTLSCert, "PEM client certificate for etcd; any -etcd-tls-* turns TLS to etcd on", etcd,
		func(t *TLSConfig) *string { return &t.CertFile })
	bindTLSString(fs, "etcd-tls-key", EnvEtcdTLSKey, "PEM private key of -etcd-tls-cert", etcd,
		func(t *TLSConfig) *string { return &t.KeyFile })
	bindTLSString(fs, "etcd-tls-ca", EnvEtcdTLSCA, "PEM CA bundle etcd's certificate must chain to; empty: the system roots", etcd,
		func(t *TLSConfig) *string { return &t.CAFile })
	bindTLSString(fs, "etcd-tls-server-name", EnvEtcdTLSServerName, "name etcd's certificate must hold; empty: the endpoint's host", etcd,
		func(t *TLSConfig) *string { return &t.ServerName })
}

// bindTLSString binds one string field of a TLSConfig to a flag and an
// environment variable; a non-empty value of either creates the TLSConfig
// (cfg) and turns TLS on.
func bindTLSString(fs *flag.FlagSet, name, env, usage string, cfg func() *TLSConfig, field func(*TLSConfig) *string) {
	if v := os.Getenv(env); v != "" {
		*field(cfg()) = v
	}
	fs.Func(name, usage+" (env "+env+")", func(v string) error {
		*field(cfg()) = v
		return nil
	})
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
