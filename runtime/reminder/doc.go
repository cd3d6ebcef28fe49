// Package reminder defines durable reminders' storage: the Table contract,
// the hash buckets that divide reminders among silos, and the etcd table.
// PostgreSQL's table lives in runtime/storage/postgres. The runtime package
// schedules and fires reminders; grain code uses grain.Context.
package reminder
