package runtime_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
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
