package runtime

import (
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// etcdClientConfig is the etcd client configuration of e (named field in
// errors, "Config.Etcd" or "ClientConfig.Etcd") for endpoints. Without TLS
// it warns when an endpoint is not on loopback.
func etcdClientConfig(e EtcdConfig, endpoints []string, field string, log *zap.Logger) (clientv3.Config, error) {
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
		return cfg, nil
	}
	creds, err := e.TLS.clientCredentials(field+".TLS", log)
	if err != nil {
		return clientv3.Config{}, err
	}
	// The etcd client appends DialOptions after its own credentials: these
	// win, so the certificate and CA bundle are reloaded when they change.
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithTransportCredentials(creds))
	return cfg, nil
}
