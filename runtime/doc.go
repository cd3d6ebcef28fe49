// Package runtime hosts grains: the silo (activation table, mailboxes and the
// turn scheduler, idle collection, the grain directory and storage wiring)
// and the clients that call grains.
//
// A silo is configured with Config, given grain types through the generated
// RegisterXxx functions, and started:
//
//	silo, err := runtime.NewSilo(runtime.Config{Cluster: "dev"})
//	if err != nil { ... }
//	hello.RegisterGreeter(silo, hello.NewGreeter)
//	if err := silo.Start(ctx); err != nil { ... }
//	defer silo.Stop(context.Background())
//
//	g := hello.NewGreeterRef(silo.Client(), "alice")
//	msg, err := g.Greet(ctx, "Alice")
//
// With no etcd endpoints the silo starts an embedded etcd in a temporary
// directory (the development default) and stores state in it. Given
// endpoints that do not answer, Start fails instead.
//
// Execution model: a grain's calls run one at a time, in arrival order, on a
// goroutine that exists only while the activation has calls waiting. An idle
// activation is a struct in a map. After its collection age without calls
// it is deactivated: OnDeactivate runs, changed state is written, its
// directory entry is removed.
//
// Cluster: every silo listens for gRPC (package transport), registers in
// etcd with a lease (package cluster) and watches the membership. A call
// goes to the grain's activation wherever it is: the directory (cached)
// names the host, validated against the membership view; a grain with no
// activation is placed on a live silo hosting its type, as the type's
// grain.Placement says, by a silo that hosts the type (see
// grain.Placement for which one); a silo that does
// not host a grain answers "not here" with a redirect and the caller routes
// again. A silo that cannot renew its lease in time fences itself (drops
// its activations unwritten) and rejoins as a new incarnation.
//
// Gateway: a silo has a second listener for clients, its gateway, on which
// a client may call grain methods and nothing else (no reminder ticks,
// reminder-service notices, forwarded requests or fields only silos set);
// an Authenticator (Config.Authenticator) may require clients to present
// a bearer token or a TLS client certificate, and grain code reads the
// authenticated caller with grain.CallerIdentity.
//
// Request context: the request values a caller sets with
// grain.WithRequestValue travel with its calls, through gateways and
// between silos, to every grain of the call's chain; a caller's
// cancellation reaches a callee in another process as a cancel message,
// and the callee's context is done.
//
// Frontend code in another process calls grains through Connect, which
// sends every call to a gateway:
//
//	client, err := runtime.Connect(ctx, runtime.ClientConfig{
//		Cluster: "bank",
//		Etcd:    runtime.EtcdConfig{Endpoints: []string{"http://127.0.0.1:2379"}},
//	})
//	if err != nil { ... }
//	defer client.Close()
//	balance, err := bank.NewAccountRef(client, "alice").Balance(ctx)
//
// TLS: plaintext is the default, for loopback. Config.TLS gives a silo a
// certificate, the cluster's CA (mutual TLS between silos) and the
// clients' CA (clients' certificates on the gateway, as
// TLSConfig.ClientAuth says), ClientConfig.TLS secures a client's
// connections, EtcdConfig.TLS those to etcd. Rotated files are picked up
// without a restart:
//
//	tc := &runtime.TLSConfig{CertFile: "silo.pem", KeyFile: "silo-key.pem",
//		CAFile: "cluster-ca.pem", ClientCAFile: "client-ca.pem"}
//	silo, err := runtime.NewSilo(runtime.Config{Cluster: "bank", TLS: tc, Etcd: etcd})
package runtime
