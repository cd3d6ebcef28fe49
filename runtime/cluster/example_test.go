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

func ExampleWatchView() {
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	view, err := cluster.WatchView(ctx, cli, "/granary/prod/")
	if err != nil {
		log.Fatal(err)
	}
	defer view.Close()

	// Routing: read the current snapshot per call; no lock is taken.
	if silos := view.Current().Hosting("bank.Account"); len(silos) > 0 {
		log.Printf("send to %s", silos[0].Address)
	}

	// Wait for the cluster to form.
	s, err := view.WaitFor(ctx, func(s *cluster.Snapshot) bool { return len(s.Active()) >= 3 })
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("3 silos active at revision %d", s.Version)

	// Follow changes: each snapshot says when a newer one replaced it.
	for s := view.Current(); ; s = view.Current() {
		log.Printf("version %d: %d active", s.Version, len(s.Active()))
		select {
		case <-s.Changed():
		case <-view.Done():
			return
		}
	}
}
