package cluster_test

import (
	"context"
	"errors"
	"log"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/runtime/cluster"
)

func ExampleJoin() {
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	m, err := cluster.Join(ctx, cli, cluster.Config{
		Prefix:     "/granary/prod/",
		Address:    "10.0.0.7:7000",
		GrainTypes: []string{"bank.Account"},
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		<-m.Done()
		if errors.Is(m.Err(), cluster.ErrFenced) {
			log.Print("lease lost: stop serving, drop activations without writing state")
		}
	}()
	// Before each turn: if m.Fenced() { refuse }.

	// Graceful shutdown.
	if err := m.SetStatus(ctx, cluster.StatusShuttingDown); err != nil {
		log.Print(err)
	}
	// ... deactivate and persist grains ...
	if err := m.Leave(ctx); err != nil {
		log.Print(err)
	}
}
