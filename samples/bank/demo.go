package bank

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/granary-rt/granary/directory"
	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/etcdembed"
	"github.com/granary-rt/granary/runtime/storage"
	"github.com/granary-rt/granary/runtime/storage/etcdstore"
)

// DemoOptions configure Demo.
type DemoOptions struct {
	// SiloBin is the path of the silo command (samples/bank/cmd/silo).
	SiloBin string
	// WebBin is the path of the HTTP frontend command (samples/web/cmd/web).
	WebBin string
	// Silos is how many silo processes to start. Default 3; at least 2.
	Silos int
	// Logger receives the logs of the embedded etcd. Default: none.
	Logger *zap.Logger
	// Verbose passes -v to the child processes, so that they write
	// development logs to their stderr.
	Verbose bool
	// ChildOutput, if set, receives the child processes' stderr, each line
	// prefixed with the process name. Otherwise their last lines are kept
	// and shown only if the demo fails.
	ChildOutput io.Writer
	// SysProcAttr, if set, is given to every child process (for example a
	// parent-death signal, so that no child outlives a killed demo).
	SysProcAttr *syscall.SysProcAttr
}

// The demo cluster's settings: a short lease so that a crashed silo's
// accounts move within seconds.
const (
	demoCluster     = "bank-demo"
	demoLeaseTTL    = 3 * time.Second
	demoReady       = 30 * time.Second // bound on a child's start
	demoStop        = 15 * time.Second // bound on a child's graceful stop
	demoRecover     = 15 * time.Second // bound on the failover
	demoHTTPTimeout = 10 * time.Second
	demoTickEvery   = 100 * time.Millisecond // pause between one account's calls during the failover
	demoCredit      = 1_00                   // deposited on every other call during the failover
)

var demoAccounts = []string{
	"alice", "bob", "carol", "dave", "erin", "frank",
	"grace", "heidi", "ivan", "judy", "mallory", "niaj",
}

// Demo runs the bank on a real cluster of separate processes and tells w
// what happens, in plain words: an embedded etcd in this process, opts.Silos
// silo processes and one HTTP frontend process. It opens accounts through
// the HTTP API, shows an overdraft refused, shows which silo hosts which
// account, kills one silo with SIGKILL while traffic continues, and waits
// until its accounts answer again from the other silos with their saved
// balances. It then stops everything gracefully and checks that etcd holds
// every acknowledged deposit. It returns an error if any step fails or any
// money was lost; it kills its child processes before it returns.
func Demo(ctx context.Context, w io.Writer, opts DemoOptions) (err error) {
	if opts.SiloBin == "" || opts.WebBin == "" {
		return errors.New("bank demo: the paths of the silo and web commands are required")
	}
	if opts.Silos == 0 {
		opts.Silos = 3
	}
	if opts.Silos < 2 {
		return fmt.Errorf("bank demo: %d silos: at least 2 are needed to show a failover", opts.Silos)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	d := &demo{w: w, opts: opts, began: time.Now()}
	if opts.ChildOutput != nil {
		d.childOut = &lockedWriter{w: opts.ChildOutput}
	}
	defer func() {
		d.killAll()
		if err != nil {
			d.showChildOutput()
		}
	}()
	return d.run(ctx)
}

type demo struct {
	w        io.Writer
	opts     DemoOptions
	childOut io.Writer
	began    time.Time

	etcd   *etcdembed.Server
	cli    *clientv3.Client
	prefix string              // the cluster's etcd prefix
	dir    *directory.Etcd     // the cluster's grain directory, read-only
	store  *etcdstore.Provider // the cluster's default state storage
	silos  []*demoProc
	web    *demoProc
	api    *demoAPI
	ledger map[string]int64 // acknowledged balance of every account
	// unsure sums the deposits whose outcome is unknown (a failed call
	// may have run: delivery is at most once).
	unsure map[string]int64
	acks   int // acknowledged deposits and withdrawals
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.w, format+"\n", args...) }

func (d *demo) run(ctx context.Context) error {
	d.prefix = runtime.ClusterPrefix(demoCluster)
	d.ledger = make(map[string]int64, len(demoAccounts))
	d.unsure = make(map[string]int64)
	d.say("Granary bank demo: %d silos and a web frontend, each a separate process.", d.opts.Silos)
	if err := d.start(ctx); err != nil {
		return err
	}
	defer d.api.close()
	if err := d.openAccounts(ctx); err != nil {
		return err
	}
	hosts, err := d.showPlacement(ctx)
	if err != nil {
		return err
	}
	fo, err := d.crash(ctx, hosts)
	if err != nil {
		return err
	}
	total, err := d.checkBalances(ctx, fo)
	if err != nil {
		return err
	}
	if err := d.shutdown(ctx, total); err != nil {
		return err
	}
	d.say("\nSummary")
	d.say("   %d silo processes and a web frontend served %d accounts over HTTP; an overdraft was refused with HTTP 409.",
		d.opts.Silos, len(demoAccounts))
	d.say("   Killed %s (kill -9), which hosted %d accounts; their calls failed for %s, until its %v lease",
		fo.victim.id, len(fo.moved), fo.outage(), demoLeaseTTL)
	d.say("   expired; then they were reactivated on the other silos with their saved balances.")
	d.say("   No money was lost: %d acknowledged deposits and withdrawals, total %s, all in etcd after a",
		d.acks, usd(total))
	d.say("   graceful shutdown. The demo took %.1f s.", time.Since(d.began).Seconds())
	return nil
}

// start starts etcd, the silos and the web frontend.
func (d *demo) start(ctx context.Context) (err error) {
	d.say("\n1. Starting the cluster")
	if d.etcd, err = etcdembed.Start(ctx, etcdembed.Config{Logger: d.opts.Logger.Named("etcd")}); err != nil {
		return err
	}
	endpoints := strings.Join(d.etcd.Endpoints(), ",")
	d.say("   etcd      embedded in this process, at %s", endpoints)
	d.cli, err = clientv3.New(clientv3.Config{Endpoints: d.etcd.Endpoints(), DialTimeout: 5 * time.Second,
		Logger: d.opts.Logger.Named("etcd-client")})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	// The cluster's tables, opened on the same etcd to look at what the
	// silos wrote: the directory read-only (no lease) and uncached.
	if d.dir, err = directory.NewEtcd(d.cli, directory.EtcdConfig{Prefix: d.prefix, CacheSize: -1}); err != nil {
		return fmt.Errorf("grain directory: %w", err)
	}
	if d.store, err = etcdstore.New(d.cli, etcdstore.Config{Prefix: d.prefix}); err != nil {
		return fmt.Errorf("state storage: %w", err)
	}

	env := []string{
		runtime.EnvEtcdEndpoints + "=" + endpoints,
		runtime.EnvCluster + "=" + demoCluster,
	}
	var flags []string
	if d.opts.Verbose {
		flags = append(flags, "-v")
	}
	for i := 1; i <= d.opts.Silos; i++ {
		id := fmt.Sprintf("silo-%d", i)
		p, err := d.startProc(id, d.opts.SiloBin, flags, append(slices.Clone(env),
			runtime.EnvSiloID+"="+id,
			runtime.EnvListen+"=127.0.0.1:0",
			runtime.EnvLeaseTTL+"="+demoLeaseTTL.String()))
		if err != nil {
			return err
		}
		d.silos = append(d.silos, p)
	}
	for _, p := range d.silos { // they start in parallel
		f, err := p.waitReady(ctx, 3)
		if err != nil {
			return err
		}
		p.id, p.addr = f[1], f[2]
		d.say("   %-9s pid %-7d serves grain calls at %s", p.id, p.cmd.Process.Pid, p.addr)
	}
	if d.web, err = d.startProc("web", d.opts.WebBin, append(flags, "-http", "127.0.0.1:0"), env); err != nil {
		return err
	}
	f, err := d.web.waitReady(ctx, 2)
	if err != nil {
		return err
	}
	d.web.addr = f[1]
	d.api = newDemoAPI("http://" + d.web.addr)
	d.say("   web       pid %-7d serves the HTTP API at %s", d.web.cmd.Process.Pid, d.api.base)
	d.say("   They share cluster %q in etcd. Each silo holds a %v lease there and renews it;", demoCluster, demoLeaseTTL)
	d.say("   the web process reads the membership and the grain directory and calls the silos directly.")
	return nil
}

// openAccounts deposits into every account, shows an overdraft refused and
// makes a few withdrawals.
func (d *demo) openAccounts(ctx context.Context) error {
	d.say("\n2. Opening %d accounts: POST /accounts/{id}/deposit", len(demoAccounts))
	for i, name := range demoAccounts {
		amount := int64(i+1) * 25_00
		r, err := d.api.move(ctx, "deposit", name, amount)
		if err != nil {
			return err
		}
		if r.Status != http.StatusOK {
			return fmt.Errorf("deposit %s into %s: %s", usd(amount), name, r)
		}
		d.ledger[name] += amount
		d.acks++
		d.say("   %-8s +%-8s -> %d, balance %s", name, usd(amount), r.Status, usd(r.Balance))
		if r.Balance != d.ledger[name] {
			return fmt.Errorf("%s: balance %s after deposit, want %s", name, usd(r.Balance), usd(d.ledger[name]))
		}
	}

	d.say("\n3. An overdraft is refused")
	const overdraft = 1000_00
	name := demoAccounts[0]
	r, err := d.api.move(ctx, "withdraw", name, overdraft)
	if err != nil {
		return err
	}
	d.say("   POST /accounts/%s/withdraw {\"amount\":%d}", name, overdraft)
	d.say("   -> %d %s, code %q: %s", r.Status, http.StatusText(r.Status), r.Code, r.Error)
	if r.Status != http.StatusConflict || r.Code != ErrInsufficientFunds.Code() {
		return fmt.Errorf("overdraft of %s: %s; want 409 with code %q", name, r, ErrInsufficientFunds.Code())
	}
	if r, err = d.api.balance(ctx, name); err != nil {
		return err
	}
	if r.Status != http.StatusOK || r.Balance != d.ledger[name] {
		return fmt.Errorf("%s after the refused overdraft: %s; want balance %s", name, r, usd(d.ledger[name]))
	}
	d.say("   The account's domain error travelled from the silo to the web process with its code, and the")
	d.say("   web process turned it into HTTP 409. Nothing changed: %s still has %s.", name, usd(r.Balance))

	d.say("\n4. Withdrawals: POST /accounts/{id}/withdraw")
	for i, name := range demoAccounts[1:5] {
		amount := int64(i+1) * 10_00
		r, err := d.api.move(ctx, "withdraw", name, amount)
		if err != nil {
			return err
		}
		if r.Status != http.StatusOK {
			return fmt.Errorf("withdraw %s from %s: %s", usd(amount), name, r)
		}
		d.ledger[name] -= amount
		d.acks++
		d.say("   %-8s -%-8s -> %d, balance %s", name, usd(amount), r.Status, usd(r.Balance))
		if r.Balance != d.ledger[name] {
			return fmt.Errorf("%s: balance %s after withdrawal, want %s", name, usd(r.Balance), usd(d.ledger[name]))
		}
	}
	return nil
}

// showPlacement reads the grain directory and says which silo hosts which
// account. It returns account -> silo id.
func (d *demo) showPlacement(ctx context.Context) (map[string]string, error) {
	d.say("\n5. Where the accounts live (the grain directory in etcd, %sdir/%s/<account>)", d.prefix, AccountType.Name)
	hosts, err := d.hosts(ctx)
	if err != nil {
		return nil, err
	}
	for _, name := range demoAccounts {
		if hosts[name] == "" {
			return nil, fmt.Errorf("account %s is not in the grain directory", name)
		}
	}
	for _, p := range d.silos {
		accts := accountsOn(hosts, p.id)
		d.say("   %-9s hosts %2d: %s", p.id, len(accts), strings.Join(accts, ", "))
	}
	d.say("   Each account is active on exactly one silo, picked at random by the web process's first call to it.")
	d.say("   Every deposit and withdrawal was written to etcd before its call returned.")
	return hosts, nil
}

// failover is what crash observed.
type failover struct {
	victim    *demoProc
	moved     []string // the victim's accounts
	killedAt  time.Time
	leaseGone time.Duration // after the kill; 0 if not seen
	recovered map[string]time.Duration
	acked     int // acknowledged deposits during the failover
	failed    int // failed calls to the victim's accounts
	others    int // failed calls to the other accounts
}

// outage says how long the victim's accounts did not answer.
func (f *failover) outage() string {
	var lo, hi time.Duration
	for _, t := range f.recovered {
		if lo == 0 || t < lo {
			lo = t
		}
		hi = max(hi, t)
	}
	if hi-lo < 100*time.Millisecond {
		return fmt.Sprintf("%.1f s", hi.Seconds())
	}
	return fmt.Sprintf("%.1f-%.1f s", lo.Seconds(), hi.Seconds())
}

// crash kills the silo that hosts the most accounts while every account
// keeps being read and credited, and waits until all answer again.
func (d *demo) crash(ctx context.Context, hosts map[string]string) (*failover, error) {
	fo := &failover{recovered: make(map[string]time.Duration)}
	for _, p := range d.silos {
		if n := len(accountsOn(hosts, p.id)); fo.victim == nil || n > len(fo.moved) {
			fo.victim, fo.moved = p, accountsOn(hosts, p.id)
		}
	}
	victim := fo.victim
	d.say("\n6. Crash: kill -9 %s (pid %d), which hosts %d accounts: %s", victim.id, victim.cmd.Process.Pid,
		len(fo.moved), strings.Join(fo.moved, ", "))
	d.say("   It gets no chance to clean up: its directory entries stay in etcd until its lease expires.")
	d.say("   Meanwhile every account is read and credited %s over HTTP, each about %d times a second.",
		usd(demoCredit), int(time.Second/demoTickEvery/2))
	d.say("   Calls that succeeded and failed, second by second:")

	// The victim's membership key is bound to its lease: its deletion is
	// the moment etcd expired the lease, and the directory entries with it.
	siloKey := d.prefix + "silos/" + victim.id
	resp, err := d.cli.Get(ctx, siloKey)
	if err != nil {
		return nil, fmt.Errorf("read %s's membership: %w", victim.id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s is not a member of the cluster (no %s in etcd)", victim.id, siloKey)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	leaseWatch := d.cli.Watch(wctx, siloKey, clientv3.WithRev(resp.Header.Revision+1))

	traffic := newDemoTraffic(d.api, fo.moved)
	fo.killedAt = time.Now()
	victim.kill()
	traffic.start(ctx, demoAccounts)
	defer traffic.stop()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	timeout := time.NewTimer(demoRecover)
	defer timeout.Stop()
	for done := false; !done; {
		select {
		case wr, ok := <-leaseWatch:
			if !ok {
				leaseWatch = nil
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete && fo.leaseGone == 0 {
					fo.leaseGone = time.Since(fo.killedAt)
					d.say("   +%.1fs  %s's lease expired: etcd deleted its membership and its directory entries",
						fo.leaseGone.Seconds(), victim.id)
				}
			}
		case <-tick.C:
			s := traffic.sample()
			line := fmt.Sprintf("   +%.0fs    ok %3d   failed %3d   ", time.Since(fo.killedAt).Seconds(), s.ok, s.failed)
			if len(s.down) > 0 {
				line += "not answering: " + strings.Join(s.down, ", ")
			} else {
				line += fmt.Sprintf("all %d accounts answer", len(demoAccounts))
			}
			d.say("%s", line)
			done = len(s.down) == 0 && s.allRecovered
		case <-timeout.C:
			s := traffic.sample()
			return nil, fmt.Errorf("%d accounts still do not answer %v after %s was killed: %s",
				len(s.down), demoRecover, victim.id, strings.Join(s.down, ", "))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	traffic.stop()
	if fo.leaseGone == 0 && leaseWatch != nil {
		// The accounts answered before the watch reported the deletion.
		select {
		case wr := <-leaseWatch:
			if len(wr.Events) > 0 {
				fo.leaseGone = time.Since(fo.killedAt)
			}
		case <-time.After(time.Second):
		}
	}
	for name, t := range traffic.recovered {
		fo.recovered[name] = t.Sub(fo.killedAt)
	}
	for name, v := range traffic.acked {
		d.ledger[name] += v
	}
	for name, v := range traffic.unsure {
		d.unsure[name] += v
	}
	fo.acked, fo.failed, fo.others = traffic.ackedN, traffic.failedVictim, traffic.failedOthers
	d.acks += fo.acked

	d.say("   The first failed call got: %s", traffic.firstFailure)
	d.say("   Calls to %s's accounts failed for %s after the kill (%d calls). Until its lease expired, the",
		victim.id, fo.outage(), fo.failed)
	d.say("   directory still named %s as their host, and no other silo may activate an account that may", victim.id)
	d.say("   still be active somewhere: that is how Granary keeps a single activation per account. Once the")
	d.say("   lease was gone, the next call to each account activated it on a live silo, which read its state")
	d.say("   from etcd.")
	if fo.others == 0 {
		d.say("   The other %d accounts answered throughout.", len(demoAccounts)-len(fo.moved))
	} else {
		d.say("   %d calls to the other accounts failed too.", fo.others)
	}
	return fo, nil
}

// checkBalances shows where the moved accounts went and compares every
// balance with the acknowledged deposits and withdrawals. It returns the
// total held.
func (d *demo) checkBalances(ctx context.Context, fo *failover) (int64, error) {
	d.say("\n7. After the crash: every balance is the last one written to etcd")
	hosts, err := d.hosts(ctx)
	if err != nil {
		return 0, err
	}
	d.say("   %-8s %-20s %10s %10s", "account", "host", "balance", "expected")
	var total, expected, applied int64
	var errs []error
	for _, name := range demoAccounts {
		r, err := d.api.balance(ctx, name)
		if err != nil {
			return 0, err
		}
		if r.Status != http.StatusOK {
			return 0, fmt.Errorf("balance of %s: %s", name, r)
		}
		host := hosts[name]
		if slices.Contains(fo.moved, name) {
			host += " (was " + fo.victim.id + ")"
		}
		want, unsure := d.ledger[name], d.unsure[name]
		mark := ""
		switch {
		case r.Balance < want:
			mark = "  MONEY LOST"
			errs = append(errs, fmt.Errorf("%s holds %s, but %s was acknowledged: %s lost",
				name, usd(r.Balance), usd(want), usd(want-r.Balance)))
		case r.Balance > want+unsure:
			mark = "  TOO MUCH"
			errs = append(errs, fmt.Errorf("%s holds %s, more than the %s acknowledged and the %s whose outcome is unknown",
				name, usd(r.Balance), usd(want), usd(unsure)))
		case r.Balance > want:
			// A deposit that failed (at most once) had run after all.
			applied += r.Balance - want
			d.ledger[name] = r.Balance
			mark = "  (+" + usd(r.Balance-want) + " from a call that failed but ran)"
		}
		d.say("   %-8s %-20s %10s %10s%s", name, host, usd(r.Balance), usd(want), mark)
		total += r.Balance
		expected += want
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	d.say("   total %s. Every acknowledged deposit and withdrawal is there: %d of them, %d during the failover;",
		usd(total), d.acks, fo.acked)
	if applied == 0 {
		d.say("   none of the deposits that failed during the failover was applied.")
	} else {
		d.say("   %s came from deposits that failed but ran (delivery is at most once: a failed call may have run).", usd(applied))
	}
	return total, nil
}

// shutdown stops the web process and the silos gracefully and checks what
// they left in etcd.
func (d *demo) shutdown(ctx context.Context, total int64) error {
	d.say("\n8. Graceful shutdown (SIGTERM)")
	d.api.close()
	if err := d.web.terminate(); err != nil {
		return err
	}
	d.say("   web       finished its requests and exited 0")
	var live []*demoProc
	for _, p := range d.silos {
		if !p.exited() {
			live = append(live, p)
		}
	}
	hosts, err := d.hosts(ctx)
	if err != nil {
		return err
	}
	errs := make([]error, len(live))
	var wg sync.WaitGroup
	for i, p := range live {
		wg.Go(func() { errs[i] = p.terminate() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, p := range live {
		d.say("   %-9s deactivated its %d accounts, wrote their state, left the cluster and exited 0",
			p.id, len(accountsOn(hosts, p.id)))
	}

	left, err := d.hosts(ctx)
	if err != nil {
		return err
	}
	if len(left) != 0 {
		return fmt.Errorf("the grain directory still has %d entries after every silo stopped", len(left))
	}
	stored, err := d.storedBalances(ctx)
	if err != nil {
		return err
	}
	var sum int64
	for _, name := range demoAccounts {
		if stored[name] != d.ledger[name] {
			return fmt.Errorf("etcd holds %s for %s after the shutdown, want %s", usd(stored[name]), name, usd(d.ledger[name]))
		}
		sum += stored[name]
	}
	if sum != total {
		return fmt.Errorf("etcd holds %s in all, want %s", usd(sum), usd(total))
	}
	d.say("   The grain directory is empty, and etcd holds the %d balances, %s in all, as acknowledged.",
		len(stored), usd(sum))
	if err := d.closeEtcd(); err != nil {
		return err
	}
	d.say("   etcd stopped.")
	return nil
}

// hosts reads the grain directory: account -> silo id.
func (d *demo) hosts(ctx context.Context) (map[string]string, error) {
	// The key of an account with an empty name is the prefix of every
	// account's key: Key escapes the name and appends it.
	prefix := d.dir.Key(grain.ID{Type: AccountType.Name})
	resp, err := d.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the grain directory: %w", err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key, err := url.PathUnescape(string(kv.Key[len(prefix):]))
		if err != nil {
			return nil, fmt.Errorf("directory key %q: %w", kv.Key, err)
		}
		var e directory.Entry
		if err := msgpack.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("directory entry %q: %w", kv.Key, err)
		}
		out[key] = e.SiloID
	}
	return out, nil
}

// storedBalances reads the accounts' persisted state straight from etcd,
// through the storage provider the silos use.
func (d *demo) storedBalances(ctx context.Context) (map[string]int64, error) {
	out := make(map[string]int64, len(demoAccounts))
	for _, name := range demoAccounts {
		data, _, err := d.store.Read(ctx, storage.Key{GrainType: AccountType.Name, GrainKey: name, State: "account"})
		if err != nil {
			return nil, fmt.Errorf("read the stored accounts: %w", err)
		}
		if data == nil {
			continue // never written
		}
		var s accountState
		if err := msgpack.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("stored state of %s: %w", name, err)
		}
		out[name] = s.Balance
	}
	return out, nil
}

func (d *demo) closeEtcd() error {
	var errs []error
	if d.cli != nil {
		errs = append(errs, d.cli.Close())
		d.cli = nil
	}
	if d.etcd != nil {
		errs = append(errs, d.etcd.Close())
		d.etcd = nil
	}
	return errors.Join(errs...)
}

// killAll kills every child process still running, waits for them, and
// closes etcd. It runs on every return of Demo.
func (d *demo) killAll() {
	if d.api != nil {
		d.api.close()
	}
	for _, p := range append(slices.Clone(d.silos), d.web) {
		if p != nil {
			p.kill()
		}
	}
	_ = d.closeEtcd()
}

// showChildOutput writes the last lines each child wrote, to explain a
// failure.
func (d *demo) showChildOutput() {
	if d.childOut != nil {
		return // already shown as it came
	}
	for _, p := range append(slices.Clone(d.silos), d.web) {
		if p == nil {
			continue
		}
		if lines := p.tail.lines(); len(lines) > 0 {
			d.say("\n--- last output of %s ---", p.name)
			for _, l := range lines {
				d.say("%s", l)
			}
		}
	}
}

func accountsOn(hosts map[string]string, silo string) []string {
	var out []string
	for _, name := range demoAccounts {
		if hosts[name] == silo {
			out = append(out, name)
		}
	}
	return out
}

// usd formats cents as dollars.
func usd(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	return fmt.Sprintf("%s$%d.%02d", sign, cents/100, cents%100)
}

// demoTraffic reads and credits accounts concurrently, one goroutine per
// account, and counts what succeeds.
type demoTraffic struct {
	api    *demoAPI
	victim map[string]bool
	quit   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	mu           sync.Mutex
	ok, failed   int             // since the last sample
	up           map[string]bool // whether the account's last call succeeded
	recovered    map[string]time.Time
	acked        map[string]int64 // acknowledged credits
	unsure       map[string]int64 // credits whose outcome is unknown
	ackedN       int
	failedVictim int
	failedOthers int
	firstFailure string // what the first failed call got
}

func newDemoTraffic(api *demoAPI, victim []string) *demoTraffic {
	t := &demoTraffic{api: api, victim: make(map[string]bool), quit: make(chan struct{}),
		up: make(map[string]bool), recovered: make(map[string]time.Time),
		acked: make(map[string]int64), unsure: make(map[string]int64)}
	for _, name := range victim {
		t.victim[name] = true
	}
	return t
}

func (t *demoTraffic) start(ctx context.Context, accounts []string) {
	for _, name := range accounts {
		t.mu.Lock()
		t.up[name] = !t.victim[name]
		t.mu.Unlock()
		t.wg.Go(func() {
			for i := 0; ; i++ {
				var (
					r   apiResult
					err error
				)
				if i%2 == 0 {
					r, err = t.api.balance(ctx, name)
				} else {
					r, err = t.api.move(ctx, "deposit", name, demoCredit)
				}
				ok := err == nil && r.Status == http.StatusOK
				if i%2 == 1 {
					t.mu.Lock()
					switch {
					case ok:
						t.acked[name] += demoCredit
						t.ackedN++
					case err == nil && (r.Status >= 400 && r.Status < 500 || r.Status == http.StatusServiceUnavailable):
						// Refused, or did not run (the frontend answers
						// 503 only for grain.OutcomeNotRun): not applied.
						// Anything else may have run.
					default:
						t.unsure[name] += demoCredit
					}
					t.mu.Unlock()
				}
				t.record(name, ok, r, err)
				select {
				case <-t.quit:
					return
				case <-ctx.Done():
					return
				case <-time.After(demoTickEvery):
				}
			}
		})
	}
}

func (t *demoTraffic) record(name string, ok bool, r apiResult, err error) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.up[name] = ok
	if ok {
		t.ok++
		if t.victim[name] && t.recovered[name].IsZero() {
			t.recovered[name] = now
		}
		return
	}
	t.failed++
	if t.firstFailure == "" {
		if err != nil {
			t.firstFailure = err.Error()
		} else {
			msg := r.Error
			if i := strings.Index(msg, "silo unavailable"); i >= 0 && i+len("silo unavailable") < len(msg) {
				msg = msg[:i+len("silo unavailable")] + ": ..." // the rest is the dial error
			}
			t.firstFailure = fmt.Sprintf("HTTP %d %s, %q", r.Status, http.StatusText(r.Status), msg)
		}
	}
	if t.victim[name] {
		t.failedVictim++
	} else {
		t.failedOthers++
	}
}

type trafficSample struct {
	ok, failed   int
	down         []string
	allRecovered bool
}

// sample returns the counts since the last sample and the accounts whose
// last call failed.
func (t *demoTraffic) sample() trafficSample {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := trafficSample{ok: t.ok, failed: t.failed, allRecovered: len(t.recovered) == len(t.victim)}
	t.ok, t.failed = 0, 0
	for _, name := range demoAccounts {
		if up, known := t.up[name]; known && !up {
			s.down = append(s.down, name)
		}
	}
	return s
}

// stop stops the traffic and waits for the calls in flight.
func (t *demoTraffic) stop() {
	t.once.Do(func() { close(t.quit) })
	t.wg.Wait()
}

// demoAPI calls the web process's HTTP API.
type demoAPI struct {
	base string
	tr   *http.Transport
	c    *http.Client
}

func newDemoAPI(base string) *demoAPI {
	tr := &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second}
	return &demoAPI{base: base, tr: tr, c: &http.Client{Transport: tr, Timeout: demoHTTPTimeout}}
}

// apiResult is the answer of the HTTP API.
type apiResult struct {
	Status  int    `json:"-"`
	Balance int64  `json:"balance"`
	Error   string `json:"error"`
	Code    string `json:"code"`
}

func (r apiResult) String() string {
	if r.Status == http.StatusOK {
		return fmt.Sprintf("HTTP %d, balance %s", r.Status, usd(r.Balance))
	}
	return fmt.Sprintf("HTTP %d (code %q): %s", r.Status, r.Code, r.Error)
}

func (a *demoAPI) balance(ctx context.Context, account string) (apiResult, error) {
	return a.do(ctx, http.MethodGet, "/accounts/"+url.PathEscape(account), nil)
}

// move deposits or withdraws amount cents.
func (a *demoAPI) move(ctx context.Context, op, account string, amount int64) (apiResult, error) {
	body, _ := json.Marshal(map[string]int64{"amount": amount})
	return a.do(ctx, http.MethodPost, "/accounts/"+url.PathEscape(account)+"/"+op, body)
}

func (a *demoAPI) do(ctx context.Context, method, path string, body []byte) (apiResult, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return apiResult{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return apiResult{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	r := apiResult{Status: resp.StatusCode}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&r); err != nil {
		return apiResult{}, fmt.Errorf("%s %s: HTTP %d with an unreadable body: %w", method, path, resp.StatusCode, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return r, nil
}

func (a *demoAPI) close() {
	if a != nil {
		a.tr.CloseIdleConnections()
	}
}

// demoProc is a child process: a silo or the web frontend.
type demoProc struct {
	name     string
	id, addr string // from its READY line
	cmd      *exec.Cmd
	tail     *tailLines
	ready    chan []string // the fields of its READY line
	done     chan struct{} // closed when it has exited
	err      error         // cmd.Wait's result, once done is closed
}

// startProc starts bin. Its stdout is watched for the READY line; its
// stderr goes to the demo's ChildOutput or is kept for failure reports.
func (d *demo) startProc(name, bin string, args, env []string) (*demoProc, error) {
	p := &demoProc{name: name, tail: &tailLines{max: 30}, ready: make(chan []string, 1), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = d.opts.SysProcAttr
	prefix := fmt.Sprintf("[%s] ", name)
	keep := func(line string) {
		p.tail.add(line)
		if d.childOut != nil {
			fmt.Fprintf(d.childOut, "%s%s\n", prefix, line)
		}
	}
	readySent := false
	p.cmd.Stdout = &lineWriter{line: func(line string) {
		if !readySent && strings.HasPrefix(line, "READY ") {
			readySent = true
			p.ready <- strings.Fields(line)
			return
		}
		keep(line)
	}}
	p.cmd.Stderr = &lineWriter{line: keep}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady waits for the READY line, which must have n fields.
func (p *demoProc) waitReady(ctx context.Context, n int) ([]string, error) {
	timer := time.NewTimer(demoReady)
	defer timer.Stop()
	select {
	case f := <-p.ready:
		if len(f) != n {
			return nil, fmt.Errorf("%s said %q; want READY and %d fields", p.name, strings.Join(f, " "), n-1)
		}
		return f, nil
	case <-p.done:
		select {
		case f := <-p.ready:
			return f, nil
		default:
		}
		return nil, fmt.Errorf("%s exited before it was ready: %v", p.name, p.err)
	case <-timer.C:
		return nil, fmt.Errorf("%s not ready after %v", p.name, demoReady)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *demoProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill kills the process with SIGKILL, if it still runs, and waits for it.
func (p *demoProc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// terminate asks the process to stop with SIGTERM and waits for it to exit
// 0; after demoStop it kills it and fails.
func (p *demoProc) terminate() error {
	if p.exited() {
		return fmt.Errorf("%s had exited before it was asked to stop: %v", p.name, p.err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	timer := time.NewTimer(demoStop)
	defer timer.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s did not stop cleanly: %w", p.name, p.err)
		}
		return nil
	case <-timer.C:
		p.kill()
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed it", p.name, demoStop)
	}
}

// lineWriter calls line for every complete line written to it.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	line func(string)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.line(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a runaway line: pass it on in pieces
		w.line(string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(b), nil
}

// tailLines keeps the last max lines.
type tailLines struct {
	mu  sync.Mutex
	max int
	buf []string
}

func (t *tailLines) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, line)
	if len(t.buf) > t.max {
		t.buf = slices.Delete(t.buf, 0, len(t.buf)-t.max)
	}
}

func (t *tailLines) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.buf)
}

// lockedWriter serialises writes from several children.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}
