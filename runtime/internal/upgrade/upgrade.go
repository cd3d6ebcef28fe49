// Package upgrade is the rolling-upgrade test of method identity: two
// versions of one grain interface, upgrade.Journal, built into separate
// silo and client binaries (cmd/journalv1, cmd/journalv2), and a test
// that replaces the silos of a cluster one at a time, from version 1 to
// version 2, while a client of each version calls continuously.
//
// Version 2 reorders the methods, adds Version, changes the parameter type
// of Note (int64 to string) and renames Append to Add, keeping its wire
// name with //granary:method name=Append. The compatibility rules (see the
// README) say: Append, Total and Log work across versions; Note fails with
// grain.ErrIncompatible between versions; Version fails with
// grain.ErrUnknownMethod on a version-1 silo.
//
// Every method but Log records in the grain's state, written before it
// returns, the call id it served and the Go method that ran, so the test
// can check that no call ran another method than the one its caller named,
// that calls refused as unknown or incompatible did not run, and that no
// acknowledged call is missing.
package upgrade

import (
	"context"
	"fmt"

	"github.com/granary-rt/granary/grain"
)

// TypeName is the registered name of both versions of the Journal.
const TypeName = "upgrade.Journal"

// Record is one call a journal served.
type Record struct {
	Call    string `msgpack:"c"`
	Method  string `msgpack:"m"` // Go method that ran
	Version string `msgpack:"v"` // version of the silo that ran it
}

type state struct {
	Total int64    `msgpack:"t"`
	Log   []Record `msgpack:"l"`
}

// Core is the implementation both versions share: a journal of the calls
// served, persisted before every reply.
type Core struct {
	Version, Silo string
	st            *grain.State[state]
}

// NewCore returns the core of a journal activation on silo, of version.
func NewCore(c grain.Context, version, silo string) *Core {
	return &Core{Version: version, Silo: silo, st: grain.NewState[state](c, "journal")}
}

// Record appends call to the journal, adds n to the total and writes the
// state. It returns the new total.
func (k *Core) Record(ctx context.Context, call, method string, n int64) (int64, error) {
	v := k.st.Value
	old := v
	v.Total += n
	v.Log = append(v.Log[:len(v.Log):len(v.Log)], Record{Call: call, Method: method, Version: k.Version})
	k.st.Value = v
	if err := k.st.Write(ctx); err != nil {
		k.st.Value = old
		return 0, fmt.Errorf("journal %s: %w", call, err)
	}
	return v.Total, nil
}

// Log returns the journal.
func (k *Core) Log() []Record { return k.st.Value.Log }

// Total returns the sum of what Append added.
func (k *Core) Total() int64 { return k.st.Value.Total }
