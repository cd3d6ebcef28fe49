package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/reminder"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// plainType is a grain written by hand that does not implement
// grain.Remindable, and reports what its grain.Context tells it.
var plainType *grain.TypeDesc

func init() { plainType = newPlainType() }

const plainTypeName = "test.Plain"

func newPlainType() *grain.TypeDesc {
	return &grain.TypeDesc{Name: plainTypeName, Methods: []grain.MethodDesc{
		{Name: "Remind", NewArgs: func() any { return new(plainRemindArgs) }, NewReply: func() any { return new(plainErr) },
			Invoke: func(ctx context.Context, impl any, args any) (any, error) {
				a := args.(*plainRemindArgs)
				p := impl.(*plain)
				return newPlainErr(p.c.RegisterReminder(ctx, a.Name, a.Due, a.Period)), nil
			}},
		{Name: "FactoryErr", NewArgs: func() any { return new(struct{}) }, NewReply: func() any { return new(plainErr) },
			Invoke: func(ctx context.Context, impl any, _ any) (any, error) {
				return newPlainErr(impl.(*plain).factoryErr), nil
			}},
		{Name: "Whoami", NewArgs: func() any { return new(struct{}) }, NewReply: func() any { return new(plainWho) },
			Invoke: func(ctx context.Context, impl any, _ any) (any, error) {
				c := impl.(*plain).c
				c.Logger().Info("whoami")
				return &plainWho{Silo: c.SiloID(), Activation: c.ActivationID()}, nil
			}},
		{Name: "Deactivate", NewArgs: func() any { return new(struct{}) }, NewReply: func() any { return new(struct{}) },
			Invoke: func(ctx context.Context, impl any, _ any) (any, error) {
				impl.(*plain).c.DeactivateOnIdle()
				return &struct{}{}, nil
			}},
	}}
}

type plainRemindArgs struct {
	Name        string
	Due, Period time.Duration
}

// plainErr is an error as the grain saw it, before the runtime marked it
// as its method's own.
type plainErr struct {
	Msg        string
	BadRequest bool
	Outcome    grain.Outcome
}

func newPlainErr(err error) *plainErr {
	if err == nil {
		return &plainErr{}
	}
	return &plainErr{Msg: err.Error(), BadRequest: errors.Is(err, grain.ErrBadRequest), Outcome: grain.OutcomeOf(err)}
}

type plainWho struct{ Silo, Activation string }

type plain struct {
	c          grain.Context
	factoryErr error
}

func registerPlain(s *runtime.Silo) {
	s.RegisterGrainType(plainType, func(c grain.Context) any {
		// Too early: the runtime cannot tell yet whether the
		// implementation is a grain.Remindable.
		return &plain{c: c, factoryErr: c.RegisterReminder(context.Background(), "from-factory", time.Hour, time.Hour)}
	})
}

func callPlain[R any](t *testing.T, ctx context.Context, c grain.Caller, key string, method int, args any) *R {
	t.Helper()
	r, err := grain.NewRef(c, plainType, key).Invoke(ctx, &plainType.Methods[method], args)
	if err != nil {
		t.Fatalf("%s.%s: %v", plainTypeName, plainType.Methods[method].Name, err)
	}
	return r.(*R)
}

const (
	plainRemind = iota
	plainFactoryErr
	plainWhoami
	plainDeactivate
)

// RegisterReminder on a grain type that does not implement
// grain.Remindable fails at once, naming the type, and writes nothing;
// so does a RegisterReminder from the factory, before the runtime can
// tell.
func TestRegisterReminderRefusesATypeThatIsNotRemindable(t *testing.T) {
	name := fmt.Sprintf("rem-plain-%d", time.Now().UnixNano())
	table := etcdReminders(t, name)
	f := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   runtime.Config{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}},
		Register: registerPlain,
	})
	ctx := ctxT(t)
	got := callPlain[plainErr](t, ctx, f.Client(), "p", plainRemind, &plainRemindArgs{Name: "beat", Due: time.Second, Period: time.Second})
	if !got.BadRequest || got.Outcome != grain.OutcomeNotRun ||
		!strings.Contains(got.Msg, "grain type "+plainTypeName+" must implement grain.Remindable") || !strings.Contains(got.Msg, `"beat"`) {
		t.Fatalf("RegisterReminder on a type that is not Remindable: %+v; want ErrBadRequest, did not run, naming the type and grain.Remindable", got)
	}
	got = callPlain[plainErr](t, ctx, f.Client(), "p", plainFactoryErr, &struct{}{})
	if !got.BadRequest || !strings.Contains(got.Msg, "before the factory of grain type "+plainTypeName+" returned") {
		t.Fatalf("RegisterReminder from the factory: %+v; want ErrBadRequest saying it is too early", got)
	}
	entries, err := table.ListGrain(ctx, grain.ID{Type: plainTypeName, Key: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("refused registrations wrote %v to the reminder table", entries)
	}
}

// A reminder already in the table for a grain type that does not
// implement grain.Remindable (registered before the type changed) is
// refused at each tick without running, and its ticks back off: the
// error is logged at the 1st, 2nd, 4th... refusal in a row, not at every
// tick. The reminder stays in the table.
func TestReminderOfATypeThatIsNotRemindableBacksOff(t *testing.T) {
	name := fmt.Sprintf("rem-stale-%d", time.Now().UnixNano())
	table := etcdReminders(t, name)
	ctx := ctxT(t)
	id := grain.ID{Type: plainTypeName, Key: "stale"}
	e := reminder.Entry{Grain: id, Name: "old", Start: time.Now(), Period: 50 * time.Millisecond}
	if _, err := table.Upsert(ctx, e); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config:   runtime.Config{Cluster: name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}, Logger: zap.New(core)},
		Register: registerPlain,
	})
	refused := func() []observer.LoggedEntry {
		return logs.FilterMessageSnippet("reminder tick refused").FilterField(zap.Stringer("grain", id)).All()
	}
	runtimetest.Eventually(t, 10*time.Second, func() bool { return len(refused()) >= 1 }, "a refused reminder tick was not logged")
	// 2.5 s is 50 periods: ticks are refused at about 0, 1 and 3 s.
	time.Sleep(2500 * time.Millisecond)
	all := refused()
	if n := len(all); n < 1 || n > 2 {
		t.Fatalf("%d refused ticks logged in 50 periods, want 1 or 2 (backing off): %v", n, all)
	}
	first := all[0]
	if first.Level != zap.ErrorLevel || !strings.Contains(first.Message, "grain.Remindable") ||
		first.ContextMap()["grain_type"] != plainTypeName || first.ContextMap()["reminder"] != "old" {
		t.Fatalf("refused tick logged as %v %q %v; want an error naming the grain type, the reminder and grain.Remindable",
			first.Level, first.Message, first.ContextMap())
	}
	if n := logs.FilterMessageSnippet("the grain failed it").FilterField(zap.Stringer("grain", id)).Len(); n != 0 {
		t.Fatalf("%d refused ticks logged as delivered and failed", n)
	}
	entries, err := table.ListGrain(ctx, id)
	if err != nil || len(entries) != 1 {
		t.Fatalf("the reminder table holds %v, %v; want the refused reminder kept", entries, err)
	}
}

// grain.Context tells the grain its silo and an activation id that
// differs between two activations of the same grain over time; its logger
// carries both.
func TestContextTellsSiloAndActivation(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	f := runtimetest.NewCluster(t, 1, runtimetest.Options{
		Config: runtime.Config{Etcd: runtime.EtcdConfig{Endpoints: endpoints}, Logger: zap.New(core)}, Register: registerPlain})
	ctx := ctxT(t)
	first := callPlain[plainWho](t, ctx, f.Client(), "w", plainWhoami, &struct{}{})
	if first.Silo != f.Silos[0].ID() {
		t.Fatalf("SiloID = %q, want the hosting silo's %q", first.Silo, f.Silos[0].ID())
	}
	if !strings.HasPrefix(first.Activation, first.Silo+"/") {
		t.Fatalf("ActivationID = %q, want it to start with the silo id %q", first.Activation, first.Silo)
	}
	if again := callPlain[plainWho](t, ctx, f.Client(), "w", plainWhoami, &struct{}{}); again.Activation != first.Activation {
		t.Fatalf("ActivationID changed from %q to %q within one activation", first.Activation, again.Activation)
	}
	other := callPlain[plainWho](t, ctx, f.Client(), "w2", plainWhoami, &struct{}{})
	if other.Activation == first.Activation {
		t.Fatalf("two grains share ActivationID %q", first.Activation)
	}
	callPlain[struct{}](t, ctx, f.Client(), "w", plainDeactivate, &struct{}{})
	var next *plainWho
	runtimetest.Eventually(t, 10*time.Second, func() bool {
		next = callPlain[plainWho](t, ctx, f.Client(), "w", plainWhoami, &struct{}{})
		return next.Activation != first.Activation
	}, "ActivationID after deactivation is still %q", first.Activation)
	if next.Silo != first.Silo || !strings.HasPrefix(next.Activation, next.Silo+"/") {
		t.Fatalf("second activation: %+v, first %+v", next, first)
	}
	var fields map[string]any
	for _, e := range logs.FilterMessage("whoami").All() {
		if m := e.ContextMap(); m["activation"] == first.Activation {
			fields = m
		}
	}
	if fields == nil || fields["silo"] != first.Silo || fields["grain"] != (grain.ID{Type: plainTypeName, Key: "w"}).String() {
		t.Fatalf("grain.Context.Logger fields %v; want silo %q, grain %s/w and activation %q", fields, first.Silo, plainTypeName, first.Activation)
	}
}
