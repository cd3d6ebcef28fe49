package grain_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/granary-rt/granary/grain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    grain.ID
		wantErr bool
	}{
		{in: "bank.Account/alice", want: grain.ID{Type: "bank.Account", Key: "alice"}},
		{in: "t/a/b", want: grain.ID{Type: "t", Key: "a/b"}},
		{in: "t/", want: grain.ID{Type: "t", Key: ""}},
		{in: "noslash", wantErr: true},
		{in: "/key", wantErr: true},
	} {
		got, err := grain.ParseID(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseID(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && (got != tc.want || got.String() != tc.in) {
			t.Errorf("ParseID(%q) = %+v (%s), want %+v", tc.in, got, got, tc.want)
		}
	}
}

var errTest = grain.NewError("grain_test.thing", "grain_test: thing failed")

func TestRemoteErrorMatchesSentinels(t *testing.T) {
	wrapped := fmt.Errorf("call: %w", errTest)
	re := &grain.RemoteError{Code: grain.CodeOf(wrapped), Message: wrapped.Error()}
	if !errors.Is(re, errTest) {
		t.Fatalf("remote error with code %q does not match its sentinel", re.Code)
	}
	if errors.Is(re, grain.ErrOverloaded) {
		t.Fatal("remote error matches an unrelated sentinel")
	}
	to := &grain.RemoteError{Code: grain.CodeOf(grain.Timeout("x")), Message: "timeout"}
	if !errors.Is(to, grain.ErrTimeout) || !errors.Is(to, context.DeadlineExceeded) {
		t.Fatal("remote timeout does not match ErrTimeout and context.DeadlineExceeded")
	}
	if grain.CodeOf(context.Canceled) != "canceled" || !errors.Is(&grain.RemoteError{Code: "canceled"}, context.Canceled) {
		t.Fatal("cancellation does not survive as a code")
	}
	if grain.CodeOf(errors.New("plain")) != "" {
		t.Fatal("plain error has a code")
	}
}

func TestNewErrorRejectsDuplicateCodes(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("defining a code twice did not panic")
		}
	}()
	grain.NewError("grain_test.thing", "again")
}

// memStore is a StateStore over one record with numeric etags.
type memStore struct {
	data   []byte
	etag   int
	writes int
	fail   error
}

func (s *memStore) Read(context.Context) ([]byte, string, error) {
	if s.etag == 0 {
		return nil, "", s.fail
	}
	return s.data, strconv.Itoa(s.etag), s.fail
}

func (s *memStore) Write(_ context.Context, data []byte, etag string) (string, error) {
	if s.fail != nil {
		return "", s.fail
	}
	if cur := map[bool]string{true: "", false: strconv.Itoa(s.etag)}[s.etag == 0]; etag != cur {
		return "", grain.ErrConflict
	}
	s.data, s.etag = append([]byte(nil), data...), s.etag+1
	s.writes++
	return strconv.Itoa(s.etag), nil
}

func (s *memStore) Clear(_ context.Context, etag string) error {
	if etag != strconv.Itoa(s.etag) {
		return grain.ErrConflict
	}
	s.data, s.etag = nil, 0
	return nil
}

// stubContext implements grain.Context with one state store.
type stubContext struct {
	grain.Context
	store *memStore
}

func (c stubContext) AttachState(string, grain.StateConfig, grain.Persistent) grain.StateStore {
	return c.store
}

type profile struct {
	Name  string         `msgpack:"name"`
	Tags  map[string]int `msgpack:"tags"`
	Count int            `msgpack:"count"`
}

func TestStateWritesOnlyWhenChanged(t *testing.T) {
	ctx := context.Background()
	store := &memStore{}
	st := grain.NewState[profile](stubContext{store: store}, "profile")
	if err := st.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if st.Exists() {
		t.Fatal("missing record reported as existing")
	}
	if wrote, err := st.WriteIfChanged(ctx); err != nil || wrote {
		t.Fatalf("unchanged zero value: wrote=%v err=%v; want no write", wrote, err)
	}
	st.Value.Name = "ada"
	st.Value.Tags = map[string]int{"b": 2, "a": 1, "c": 3}
	if wrote, err := st.WriteIfChanged(ctx); err != nil || !wrote {
		t.Fatalf("changed value: wrote=%v err=%v; want a write", wrote, err)
	}
	// Map iteration order must not make an unchanged value look changed.
	for range 20 {
		if wrote, err := st.WriteIfChanged(ctx); err != nil || wrote {
			t.Fatalf("unchanged value with a map: wrote=%v err=%v", wrote, err)
		}
	}
	st.Value.Count++
	if wrote, _ := st.WriteIfChanged(ctx); !wrote {
		t.Fatal("changed count not written")
	}
	if store.writes != 2 {
		t.Fatalf("writes = %d, want 2", store.writes)
	}

	again := grain.NewState[profile](stubContext{store: store}, "profile")
	if err := again.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if again.Value.Name != "ada" || again.Value.Count != 1 || again.Value.Tags["c"] != 3 || !again.Exists() {
		t.Fatalf("reloaded %+v", again.Value)
	}
	if wrote, _ := again.WriteIfChanged(ctx); wrote {
		t.Fatal("freshly loaded value written back")
	}
}

func TestStateStaleWriteConflicts(t *testing.T) {
	ctx := context.Background()
	store := &memStore{}
	a := grain.NewState[profile](stubContext{store: store}, "p")
	b := grain.NewState[profile](stubContext{store: store}, "p")
	for _, s := range []*grain.State[profile]{a, b} {
		if err := s.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a.Value.Count = 1
	if err := a.Write(ctx); err != nil {
		t.Fatal(err)
	}
	b.Value.Count = 2
	if err := b.Write(ctx); !errors.Is(err, grain.ErrConflict) {
		t.Fatalf("stale write: err = %v, want ErrConflict", err)
	}
	if err := a.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Exists() || a.Value.Count != 0 {
		t.Fatalf("after Clear: exists=%v value=%+v", a.Exists(), a.Value)
	}
	if wrote, _ := a.WriteIfChanged(ctx); wrote {
		t.Fatal("cleared zero value written back")
	}
}

func TestStateReadErrorIsWrapped(t *testing.T) {
	boom := errors.New("disk on fire")
	st := grain.NewState[profile](stubContext{store: &memStore{fail: boom}}, "p")
	if err := st.Reload(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want wrapping %v", err, boom)
	}
}

func TestTypeConfig(t *testing.T) {
	c := grain.NewTypeConfig(grain.WithCollectionAge(5), grain.WithMailboxLimit(7))
	if c.CollectionAge != 5 || c.MailboxLimit != 7 {
		t.Fatalf("config = %+v", c)
	}
}
