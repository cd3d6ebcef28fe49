// Package remindertest is the conformance suite for reminder tables. Every
// reminder.Table must pass Run; a table's own tests call it with a
// constructor that returns an empty table (or one in a namespace no other
// call shares):
//
//	func TestConformance(t *testing.T) {
//		remindertest.Run(t, func(t *testing.T) reminder.Table {
//			return mytable.New(...) // empty
//		})
//	}
//
// Bench runs the shared Upsert, Get and ListBucket benchmarks the same way.
package remindertest
