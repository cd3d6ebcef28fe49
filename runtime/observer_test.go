package runtime_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain"
	"github.com/granary-rt/granary/runtime"
	"github.com/granary-rt/granary/runtime/internal/testgrains"
	"github.com/granary-rt/granary/runtime/internal/transport"
	"github.com/granary-rt/granary/runtime/runtimetest"
)

// chanListener is a client's Listener: it sends what it hears on a channel.
type chanListener chan string

func (l chanListener) Heard(ctx context.Context, seq int64, text string) error {
	select {
	case l <- text:
	default:
	}
	return nil
}

// roomOn returns the key of a Room grain hosted by silo, activating rooms
// until one lands there.
func roomOn(t *testing.T, c grain.Caller, silo string) string {
	t.Helper()
	for i := range 64 {
		key := fmt.Sprintf("room-%s-%d-%d", t.Name(), time.Now().UnixNano(), i)
		where, err := testgrains.NewRoomRef(c, key).Where(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if where == silo {
			return key
		}
	}
	t.Fatalf("no room placed on silo %s", silo)
	return ""
}

func post(t *testing.T, room testgrains.RoomRef, text string) testgrains.PostResult {
	t.Helper()
	res, err := room.Post(ctxT(t), text)
	if err != nil {
		t.Fatalf("Post(%q): %v", text, err)
	}
	return res
}

func receive(t *testing.T, l chanListener, want string) {
	t.Helper()
	select {
	case got := <-l:
		if got != want {
			t.Fatalf("observer heard %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("observer never heard %q", want)
	}
}

// TestObserverThroughGateway: a client's observer, subscribed to a grain
// on a silo that is not the client's gateway, receives the grain's
// notifications (grain's silo -> gateway silo -> client); once the
// client deletes it, or closes, the grain's next notification fails with
// ErrObserverGone, which drops the subscriber, and the gateway holds no
// state for it.
func TestObserverThroughGateway(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	gw, other := f.Silos[0], f.Silos[1]
	ctx := ctxT(t)
	c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: f.Name, Gateways: []string{gw.GatewayAddress()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	room := testgrains.NewRoomRef(c, roomOn(t, c, other.ID()))

	l := make(chanListener, 10)
	ref, h, err := testgrains.NewListenerRef(ctx, c, l)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Silo != gw.ID() || ref.Type != testgrains.ListenerType.Name {
		t.Fatalf("reference %+v: want one delivered by the gateway %s", ref, gw.ID())
	}
	if err := room.Join(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if res := post(t, room, "hello"); res.Delivered != 1 || res.Err != "" {
		t.Fatalf("post to one subscriber: %+v", res)
	}
	receive(t, l, "hello")
	if n := gw.ObserverCount(); n != 1 {
		t.Fatalf("gateway holds %d observers, want 1", n)
	}

	h.Delete()
	select {
	case <-h.Done():
	default:
		t.Fatal("Done not closed by Delete")
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return gw.ObserverCount() == 0 }, "the gateway kept a deleted observer")
	if res := post(t, room, "after delete"); res.Delivered != 0 || res.Subscribers != 0 {
		t.Fatalf("post after Delete: %+v; want the gone subscriber dropped", res)
	}

	// A client that closes: its observers go with its connection.
	l2 := make(chanListener, 10)
	ref2, h2, err := testgrains.NewListenerRef(ctx, c, l2)
	if err != nil {
		t.Fatal(err)
	}
	if err := room.Join(ctx, ref2); err != nil {
		t.Fatal(err)
	}
	if res := post(t, room, "two"); res.Delivered != 1 {
		t.Fatalf("post: %+v", res)
	}
	receive(t, l2, "two")
	c.Close()
	select {
	case <-h2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed when the client closed")
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return gw.ObserverCount() == 0 }, "the gateway kept a closed client's observer")
	room = testgrains.NewRoomRef(f.Client(), room.ID().Key)
	if res := post(t, room, "after close"); res.Delivered != 0 || res.Subscribers != 0 {
		t.Fatalf("post after the client closed: %+v", res)
	}
}

// TestObserverRefsThatNameNothing: references that name no observer (a
// made-up key on a live silo, a silo that is not in the cluster) fail
// with ErrObserverGone, and the grain carries on.
func TestObserverRefsThatNameNothing(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	c := f.Client()
	ctx := ctxT(t)
	room := testgrains.NewRoomRef(c, roomOn(t, c, f.Silos[1].ID()))
	watcher, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: f.Name, Etcd: runtime.EtcdConfig{Endpoints: endpoints}})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	self, ok := watcher.View().Current().Get(f.Silos[0].ID())
	if !ok {
		t.Fatal("silo 1 does not see silo 0")
	}
	inc0 := self.Incarnation
	for _, ref := range []grain.ObserverRef{
		{Type: testgrains.ListenerType.Name, Silo: f.Silos[0].ID(), Incarnation: inc0, Key: "made-up"}, // remote silo
		{Type: testgrains.ListenerType.Name, Silo: f.Silos[1].ID(), Key: "made-up"},                    // the room's own
		{Type: testgrains.ListenerType.Name, Silo: "no-such-silo", Key: "k"},                           // never was: incarnation 0 ended
		{Type: testgrains.ListenerType.Name, Silo: f.Silos[0].ID(), Incarnation: 1, Key: "k"},          // an earlier incarnation
	} {
		if err := room.Join(ctx, testgrains.ListenerRef{ObserverRef: ref}); err != nil {
			t.Fatal(err)
		}
	}
	res := post(t, room, "anyone?")
	if res.Delivered != 0 || res.Subscribers != 0 || res.Err != "" {
		t.Fatalf("post to three references to nothing: %+v; want all dropped as gone", res)
	}
	// The error itself, as a grain sees it.
	ref := testgrains.ListenerRef{ObserverRef: grain.ObserverRef{Type: testgrains.ListenerType.Name, Silo: f.Silos[0].ID(), Incarnation: inc0, Key: "made-up"}}
	err = ref.Bind(f.Silos[1]).Heard(ctx, 1, "x")
	if !errors.Is(err, grain.ErrObserverGone) || grain.OutcomeOf(err) != grain.OutcomeNotRun {
		t.Fatalf("call to a made-up observer: %v (outcome %v), want ErrObserverGone, not run", err, grain.OutcomeOf(err))
	}
	if err := ref.Bind(callerOnly{}).Heard(ctx, 1, "x"); !errors.Is(err, grain.ErrBadRequest) {
		t.Fatalf("call through a Caller that cannot call observers: %v", err)
	}
}

// callerOnly is a grain.Caller that cannot call observers.
type callerOnly struct{}

func (callerOnly) Invoke(context.Context, *grain.Call) (any, error) { return nil, nil }

// TestObserverOfAGrain: a grain makes an observer on its own silo; its
// calls run there, from that grain and from a grain on another silo.
func TestObserverOfAGrain(t *testing.T) {
	f := start(t, 2, runtime.Config{})
	c := f.Client()
	ctx := ctxT(t)
	room := testgrains.NewRoomRef(c, roomOn(t, c, f.Silos[0].ID()))
	key := fmt.Sprintf("log-%d", time.Now().UnixNano())
	ref, err := room.ListenHere(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Silo != f.Silos[0].ID() {
		t.Fatalf("a grain's observer on silo %s, want its own silo %s", ref.Silo, f.Silos[0].ID())
	}
	if res := post(t, room, "local"); res.Delivered != 1 {
		t.Fatalf("post: %+v", res)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return slices.Equal(testgrains.HeardLog(key), []string{"local"}) },
		"the grain's own observer did not hear the post: %v", testgrains.HeardLog(key))

	far := testgrains.NewRoomRef(c, roomOn(t, c, f.Silos[1].ID()))
	if err := far.Join(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if res := post(t, far, "remote"); res.Delivered != 1 {
		t.Fatalf("post from the other silo: %+v", res)
	}
	runtimetest.Eventually(t, 5*time.Second, func() bool { return slices.Equal(testgrains.HeardLog(key), []string{"local", "remote"}) },
		"the observer did not hear the other silo's room: %v", testgrains.HeardLog(key))
}

// TestClientObserverBounds: a client holds at most
// MaxObserversPerConnection observers.
func TestClientObserverBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("makes a thousand observers")
	}
	f := start(t, 1, runtime.Config{})
	ctx := ctxT(t)
	c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: f.Name, Gateways: []string{f.Silos[0].GatewayAddress()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := make(chanListener, 1)
	for i := range runtime.MaxObserversPerConnection {
		if _, _, err := testgrains.NewListenerRef(ctx, c, l); err != nil {
			t.Fatalf("observer %d: %v", i, err)
		}
	}
	if _, _, err := testgrains.NewListenerRef(ctx, c, l); !errors.Is(err, grain.ErrOverloaded) {
		t.Fatalf("observer %d: %v, want ErrOverloaded", runtime.MaxObserversPerConnection+1, err)
	}
	if n := f.Silos[0].ObserverCount(); n != runtime.MaxObserversPerConnection {
		t.Fatalf("gateway holds %d observers, want %d", n, runtime.MaxObserversPerConnection)
	}
}

// The observer client child process (TestObserverClientProcessKilled):
// with envObserverClient set, the test binary connects to the gateway
// GRANARY_TEST_GATEWAY, subscribes a Listener to the Room
// GRANARY_TEST_ROOM, prints "JOINED", then "HEARD <text>" for every
// notification, until stdin closes.
const envObserverClient = "GRANARY_TEST_OBSERVER_CLIENT"

func init() {
	if os.Getenv(envObserverClient) == "" {
		return
	}
	os.Exit(runObserverClient())
}

func runObserverClient() int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: os.Getenv(envObserverClient), Gateways: []string{os.Getenv("GRANARY_TEST_GATEWAY")}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "observer client:", err)
		return 1
	}
	defer c.Close()
	l := make(chanListener, 100)
	ref, _, err := testgrains.NewListenerRef(ctx, c, l)
	if err == nil {
		err = testgrains.NewRoomRef(c, os.Getenv("GRANARY_TEST_ROOM")).Join(ctx, ref)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "observer client:", err)
		return 1
	}
	fmt.Println("JOINED")
	go func() {
		for text := range l {
			fmt.Println("HEARD " + text)
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// TestObserverClientProcessKilled: a client process subscribes an
// observer to a Room on a silo process that is not its gateway (the
// calls cross room's silo -> gateway silo -> client) and hears its
// posts. After the client is killed with SIGKILL, the room's next
// notifications fail with ErrObserverGone within a second (the gateway
// saw the connection reset), the subscriber is dropped, and the room
// keeps serving.
func TestObserverClientProcessKilled(t *testing.T) {
	pc := startProcesses(t, 2, 0)
	gw, host := pc.silos[0], pc.silos[1]
	key := roomOn(t, pc.client, host.ID)
	room := testgrains.NewRoomRef(pc.client, key)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envObserverClient+"="+pc.name, "GRANARY_TEST_GATEWAY="+gw.Gateway, "GRANARY_TEST_ROOM="+key)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); <-exited })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("client process exited before printing %q", want)
				}
				if line == want {
					return
				}
				if strings.HasPrefix(line, "HEARD ") || line == "JOINED" {
					t.Fatalf("client process printed %q, want %q", line, want)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("client process did not print %q", want)
			}
		}
	}
	expect("JOINED")
	for _, text := range []string{"one", "two"} {
		if res := post(t, room, text); res.Delivered != 1 || res.Subscribers != 1 {
			t.Fatalf("post %q: %+v", text, res)
		}
		expect("HEARD " + text)
	}

	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	<-exited
	killed := time.Now()
	var res testgrains.PostResult
	for res = post(t, room, "anyone?"); res.Subscribers != 0; res = post(t, room, "anyone?") {
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("10 s after the client was killed, the room still has a subscriber: %+v", res)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(killed)
	t.Logf("notifications failed as gone %v after the client was killed (last post %+v)", took, res)
	if took > time.Second {
		t.Errorf("the gateway took %v to notice the killed client, want under a second", took)
	}
	if res.Delivered != 0 {
		t.Fatalf("post after the kill: %+v", res)
	}
	// The room keeps serving.
	if where, err := room.Where(ctxT(t)); err != nil || where != host.ID {
		t.Fatalf("Where after the kill: %q, %v", where, err)
	}
	if res := post(t, room, "still here"); res.Seq == 0 || res.Err != "" {
		t.Fatalf("post after the kill: %+v", res)
	}
}

// TestGatewayObserverRequestsFromHostileClients: what a client may send
// about observers is bounded and checked: malformed or oversized
// creations are refused, a client may not call observers through its
// gateway, and it may delete only its own.
func TestGatewayObserverRequestsFromHostileClients(t *testing.T) {
	f := start(t, 1, runtime.Config{})
	s := f.Silos[0]
	ctx := ctxT(t)
	const service = "granary.observers"
	create := func(tc *transport.Client, body []byte) (*transport.Envelope, error) {
		return tc.Call(ctx, s.GatewayAddress(), &transport.Envelope{Target: grain.ID{Type: service}, Method: "$create", Body: body})
	}
	str := func(v string) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tc, other := newRawClient(t), newRawClient(t)
	_, err := create(tc, []byte{0xc1})
	checkCode(t, "a creation whose body is not msgpack", err, grain.ErrBadRequest, grain.OutcomeNotRun)
	_, err = create(tc, str(strings.Repeat("x", 300)))
	checkCode(t, "a creation with a 300-byte type name", err, grain.ErrBadRequest, grain.OutcomeNotRun)
	_, err = tc.Call(ctx, s.GatewayAddress(), &transport.Envelope{Target: grain.ID{Type: service, Key: "k"}, Method: "Heard", Body: nil})
	checkCode(t, "an observer call from a client", err, grain.ErrPermissionDenied, grain.OutcomeNotRun)

	resp, err := create(tc, str(testgrains.ListenerType.Name))
	if err != nil {
		t.Fatal(err)
	}
	var ref grain.ObserverRef
	if err := msgpack.Unmarshal(resp.Body, &ref); err != nil || ref.Key == "" || ref.Silo != s.ID() {
		t.Fatalf("created %+v, %v", ref, err)
	}
	del := func(tc *transport.Client) {
		if _, err := tc.Call(ctx, s.GatewayAddress(), &transport.Envelope{Target: grain.ID{Type: service}, Method: "$delete", Body: str(ref.Key)}); err != nil {
			t.Fatal(err)
		}
	}
	del(other)
	if n := s.ObserverCount(); n != 1 {
		t.Fatalf("another client deleted the observer: %d left", n)
	}
	// The raw client has no OnPush: the call is pushed, and dropped there.
	if err := (testgrains.ListenerRef{ObserverRef: ref}).Bind(s).Heard(ctx, 1, "x"); err != nil {
		t.Fatalf("call to a live observer: %v", err)
	}
	del(tc)
	if n := s.ObserverCount(); n != 0 {
		t.Fatalf("%d observers left after the owner deleted its own", n)
	}
	err = (testgrains.ListenerRef{ObserverRef: ref}).Bind(s).Heard(ctx, 1, "x")
	checkCode(t, "a call to a deleted observer", err, grain.ErrObserverGone, grain.OutcomeNotRun)
}

// TestObserverGatewayKilled: when the gateway silo holding a client's
// observer is killed with SIGKILL, the client's handle is Done at once,
// and the grain's notifications fail as gone once the membership says
// the silo died (within its lease TTL), never before and never with a
// wrong delivery; the grain keeps serving.
func TestObserverGatewayKilled(t *testing.T) {
	const ttl = 2 * time.Second
	pc := startProcesses(t, 2, ttl)
	gw, host := pc.silos[0], pc.silos[1]
	ctx := ctxT(t)
	room := testgrains.NewRoomRef(pc.client, roomOn(t, pc.client, host.ID))
	c, err := runtime.Connect(ctx, runtime.ClientConfig{Cluster: pc.name, Gateways: []string{gw.Gateway}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := make(chanListener, 10)
	ref, h, err := testgrains.NewListenerRef(ctx, c, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := room.Join(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if res := post(t, room, "before"); res.Delivered != 1 {
		t.Fatalf("post: %+v", res)
	}
	receive(t, l, "before")

	gw.Kill()
	killed := time.Now()
	select {
	case <-h.Done():
		t.Logf("handle Done %v after the gateway was killed", time.Since(killed))
	case <-time.After(5 * time.Second):
		t.Fatal("the handle is not Done 5 s after its gateway was killed")
	}
	var res testgrains.PostResult
	for {
		r, err := room.Post(ctxT(t), "anyone?")
		if err == nil {
			res = r
			if res.Subscribers == 0 {
				break
			}
			if res.Delivered != 0 {
				t.Fatalf("a notification was delivered to an observer of a killed gateway: %+v", res)
			}
		}
		if time.Since(killed) > 3*ttl+5*time.Second {
			t.Fatalf("%v after the gateway was killed the room still has its subscriber: %+v (%v)", time.Since(killed), res, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the subscriber was dropped as gone %v after its gateway was killed (lease TTL %v)", time.Since(killed), ttl)
	if where, err := room.Where(ctxT(t)); err != nil || where != host.ID {
		t.Fatalf("Where after the kill: %q, %v", where, err)
	}
}
