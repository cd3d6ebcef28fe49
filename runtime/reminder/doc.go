// Package reminder defines durable reminders' storage: the Table contract,
// the hash buckets that divide reminders among silos, and two tables: Etcd,
// which keeps them in the cluster's etcd, and Memory, for tests and
// single-process development. PostgreSQL's table lives in
// runtime/storage/postgres. The runtime package schedules and fires
// reminders; grain code uses grain.Context.
//
// A reminder belongs to a grain and has a name, a first due time and a
// period. The reminder space is split into Buckets hash buckets by the
// grain's Hash; each bucket is served by one silo, which lists the bucket,
// fires what is due and checkpoints how far it got with SaveProgress:
//
//	table, err := reminder.NewEtcd(cli, reminder.EtcdConfig{Prefix: "/granary/prod/"})
//	if err != nil { ... }
//	etag, err := table.Upsert(ctx, reminder.Entry{
//		Grain:  grain.ID{Type: "bank.Account", Key: "alice"},
//		Name:   "interest",
//		Start:  time.Now().Add(time.Hour),
//		Period: 24 * time.Hour,
//	})
//	...
//	due, err := table.ListBucket(ctx, b) // on the silo that owns bucket b
//	...
//	err = table.SaveProgress(ctx, []int{b}, firedThrough)
//
// Every Table passes the conformance suite in package remindertest.
package reminder
