package upgrade_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	v1 "github.com/granary-rt/granary/runtime/internal/upgrade/v1/journal"
	v2 "github.com/granary-rt/granary/runtime/internal/upgrade/v2/journal"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// Signatures of Note in either version, as errors name them.
const (
	noteV1 = "Note(string, int64) (journal.Ack, error)"
	noteV2 = "Note(string, string) (journal.Ack, error)"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// cluster starts a silo hosting version (v1 or v2) of the Journal and
// returns two callers of it: the silo's in-process client and a client
// that reaches it over the network.
func cluster(t *testing.T, version string) map[string]grain.Caller {
	t.Helper()
	c := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config: runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}},
		Register: func(s *runtime.Silo) {
			if version == v1.Version {
				v1.RegisterJournal(s, v1.New("silo-"+version))
			} else {
				v2.RegisterJournal(s, v2.New("silo-"+version))
			}
		},
	})
	remote, err := runtime.Connect(ctxT(t), runtime.ClientConfig{Cluster: c.Name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.Close() })
	return map[string]grain.Caller{"in-process": c.Client(), "remote": remote}
}

func logCalls(t *testing.T, ctx context.Context, c grain.Caller, key string) []string {
	t.Helper()
	recs, err := v2.NewJournalRef(c, key).Log(ctx)
	if err != nil {
		t.Fatalf("Log: %v", err)
	}
	var calls []string
	for _, r := range recs {
		calls = append(calls, r.Call+":"+r.Method)
	}
	return calls
}

// TestCompatibilityRules checks each rule of the README's "Compatibility
// and upgrades" with a version-1 caller of a version-2 silo and the other
// way round, in-process and over the network.
func TestCompatibilityRules(t *testing.T) {
	newer, older := cluster(t, v2.Version), cluster(t, v1.Version)
	for _, path := range []string{"in-process", "remote"} {
		t.Run(path, func(t *testing.T) {
			ctx := ctxT(t)
			key := "rules-" + path
			j1 := v1.NewJournalRef(newer[path], key)

			// Renaming with //granary:method name=... is compatible:
			// version 1's Append runs version 2's Add.
			a, err := j1.Append(ctx, "c1", 5)
			if err != nil || a.Method != "Add" || a.Version != v2.Version || a.Total != 5 {
				t.Fatalf("v1 Append on a v2 silo = %+v, %v; want Add to run", a, err)
			}
			// Reordering is compatible: Total and Log moved, and are
			// still the methods called.
			if a, err := j1.Total(ctx, "c2"); err != nil || a.Method != "Total" || a.Total != 5 {
				t.Fatalf("v1 Total on a v2 silo = %+v, %v", a, err)
			}
			// Changed parameter types: ErrIncompatible naming both
			// signatures; it did not run.
			_, err = j1.Note(ctx, "c3", 7)
			if !errors.Is(err, grain.ErrIncompatible) || grain.OutcomeOf(err) != grain.OutcomeNotRun {
				t.Fatalf("v1 Note on a v2 silo: %v (outcome %v), want ErrIncompatible, did not run", err, grain.OutcomeOf(err))
			}
			for _, want := range []string{"upgrade.Journal", noteV1, noteV2} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
			// Adding a method is compatible: version 2 callers of the
			// same grain use it, version 1 callers above were not
			// disturbed by it.
			j2 := v2.NewJournalRef(newer[path], key)
			if a, err := j2.Version(ctx, "c4"); err != nil || a.Method != "Version" {
				t.Fatalf("v2 Version on a v2 silo = %+v, %v", a, err)
			}
			if got, want := logCalls(t, ctx, newer[path], key), []string{"c1:Add", "c2:Total", "c4:Version"}; !slices.Equal(got, want) {
				t.Fatalf("journal = %v, want %v", got, want)
			}

			// A method the silo does not have: ErrUnknownMethod naming it.
			o2 := v2.NewJournalRef(older[path], key)
			_, err = o2.Version(ctx, "c5")
			if !errors.Is(err, grain.ErrUnknownMethod) || grain.OutcomeOf(err) != grain.OutcomeNotRun ||
				!strings.Contains(err.Error(), "upgrade.Journal has no method Version") {
				t.Fatalf("v2 Version on a v1 silo: %v, want ErrUnknownMethod naming upgrade.Journal and Version", err)
			}
			if _, err := o2.Note(ctx, "c6", "seven"); !errors.Is(err, grain.ErrIncompatible) ||
				!strings.Contains(err.Error(), noteV1) || !strings.Contains(err.Error(), noteV2) {
				t.Fatalf("v2 Note on a v1 silo: %v, want ErrIncompatible naming both signatures", err)
			}
			if a, err := o2.Add(ctx, "c7", 2); err != nil || a.Method != "Append" || a.Version != v1.Version {
				t.Fatalf("v2 Add on a v1 silo = %+v, %v; want Append to run", a, err)
			}
			if got, want := logCalls(t, ctx, older[path], key), []string{"c7:Append"}; !slices.Equal(got, want) {
				t.Fatalf("journal = %v, want %v", got, want)
			}
		})
	}
}
