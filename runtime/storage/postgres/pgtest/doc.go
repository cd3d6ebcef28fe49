// Package pgtest gives tests a PostgreSQL to run against: a throwaway
// database on the machine's server (DSN), or a private server process that
// a test may stop and start to inject faults (StartServer).
//
//	func TestSomething(t *testing.T) {
//		p, err := postgres.New(t.Context(), postgres.Config{DSN: pgtest.DSN(t)})
//		...
//	}
//
//	func TestOutage(t *testing.T) {
//		srv := pgtest.StartServer(t)
//		p, err := postgres.New(t.Context(), postgres.Config{DSN: srv.DSN()})
//		...
//		srv.Stop()  // calls fail: connection refused
//		srv.Start() // same port, same data: calls succeed again
//	}
//
// DSN uses the server named by $GRANARY_PG_DSN if it is set. Otherwise it
// uses the machine's cluster (Debian's postgresql-common layout: the newest
// cluster named "main" that pg_lsclusters lists), starts it if it is down,
// and, when the tests run as root, creates a superuser role named after
// the OS user so that peer authentication on the Unix socket in
// /var/run/postgresql lets them in. The equivalent one-time setup by hand:
//
//	pg_ctlcluster --skip-systemctl-redirect 15 main start
//	runuser -u postgres -- psql -c 'CREATE ROLE root SUPERUSER LOGIN'
//
// StartServer needs PostgreSQL's server binaries in /usr/lib/postgresql/*/bin
// (the postgresql package) and, when running as root, a postgres OS user to
// run them as. A missing PostgreSQL fails the test; pgtest never skips.
package pgtest
