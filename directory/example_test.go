package directory_test

import (
	"context"
	"fmt"
	"log"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
)

// Two silos race to activate the same grain; the directory lets one win
// and tells the other where the grain lives.
func ExampleMemory() {
	ctx := context.Background()
	dir := directory.NewMemory()
	id := grain.ID{Type: "bank.Account", Key: "alice"}

	a := directory.Entry{SiloID: "silo-a", Address: "10.0.0.1:7000", Incarnation: 1, ActivationID: 1}
	b := directory.Entry{SiloID: "silo-b", Address: "10.0.0.2:7000", Incarnation: 1, ActivationID: 1}
	won, _ := dir.Register(ctx, id, a)
	got, _ := dir.Register(ctx, id, b)
	fmt.Println("a registered:", won == a)
	fmt.Println("b told to forward to:", got.Address)

	_ = dir.Unregister(ctx, id, b) // not b's: no effect
	e, ok, _ := dir.Lookup(ctx, id)
	fmt.Println("still registered:", ok, e.SiloID)

	dir.ForgetSilo("silo-a") // silo-a's lease expired
	_, ok, _ = dir.Lookup(ctx, id)
	fmt.Println("registered after silo-a died:", ok)
	// Output:
	// a registered: true
	// b told to forward to: 10.0.0.1:7000
	// still registered: true silo-a
	// registered after silo-a died: false
}

func ExampleNewEtcd() {
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	// A client's directory is read-only: no lease.
	dir, err := directory.NewEtcd(cli, directory.EtcdConfig{Prefix: "/granary/prod/"})
	if err != nil {
		log.Fatal(err)
	}
	e, ok, err := dir.Lookup(ctx, grain.ID{Type: "bank.Account", Key: "alice"})
	if err != nil {
		log.Fatal(err)
	}
	if ok {
		fmt.Println("call", e.Address)
	}
}
