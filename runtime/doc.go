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
package runtime
