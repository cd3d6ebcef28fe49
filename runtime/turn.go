package runtime

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/granary-rt/granary/grain"
)

// The execution rule. At most one goroutine runs an activation's code at any
// instant: the one that holds the activation's turn token (activation.running).
// A turn gives the token up while it waits on a call it made to a grain
// (beginWait), and takes it back before it continues (endWait); meanwhile
// another call of the activation may start, but only one the rules admit
// (mayStartLocked): any call of a reentrant type, a method marked
// //granary:interleave, a read-only call while only read-only turns wait,
// and a call on a waiting turn's own chain if the type has call-chain
// reentrancy. A call on a waiting turn's chain that none of these admit
// fails at once with grain.ErrDeadlock (admitLocked).
//
// Whoever gives the token up hands it on (handOffLocked): to a waiting turn
// whose call returned first, then to an admitted call, then to the mailbox.

// turn is one turn of an activation: a call, a timer callback, or the
// activation's OnActivate / OnDeactivate. It is the context the grain's code
// gets, so that a call the code makes finds the turn it belongs to.
type turn struct {
	context.Context
	a   *activation
	seq uint64 // numbers the turn in its activation; never 0
	// method names the turn in call chains: the method called, or what
	// the runtime runs ("$timer", "$activate", "$deactivate").
	method   string
	readOnly bool
	// chain is the call chain the turn's call came with (nil for a call
	// from a client, a one-way call or a system turn); out, made on the
	// first call the turn makes, is chain plus the turn itself.
	chain []link
	out   []link
	// outOnce makes out once: several calls of the turn (a fan-out) may
	// ask for it at once.
	outOnce sync.Once
	outErr  error

	// Guarded by a.mu (see beginWait).
	outstanding int  // calls the turn waits on
	holds       bool // the turn has the activation's token
	ended       bool // the turn's code returned
}

type turnKey struct{}

// Value makes the turn findable from any context derived from it.
func (t *turn) Value(key any) any {
	if key == (turnKey{}) {
		return t
	}
	return t.Context.Value(key)
}

// turnOf returns the turn ctx belongs to, if it was derived from one.
func turnOf(ctx context.Context) *turn {
	t, _ := ctx.Value(turnKey{}).(*turn)
	return t
}

// newTurn starts numbering a turn of a. It holds no lock: a.turnSeq is
// owned by the token holder.
func (a *activation) newTurn(ctx context.Context, method string, readOnly bool, chain []link) *turn {
	return a.initTurn(new(turn), ctx, method, readOnly, chain)
}

// initTurn is newTurn in place, for a zero t.
func (a *activation) initTurn(t *turn, ctx context.Context, method string, readOnly bool, chain []link) *turn {
	a.turnSeq++
	t.Context, t.a, t.seq, t.method, t.readOnly, t.chain = ctx, a, a.turnSeq, method, readOnly, chain
	t.holds = true // made by the token's holder, for the turn it starts
	return t
}

// link is one grain in a call chain: the turn of an activation that waits
// for the rest of the chain.
type link struct {
	grain  grain.ID
	method string
	silo   string
	inc    int64
	seq    uint64 // the activation's sequence number on its silo
	turn   uint64
}

// maxChainDepth bounds the grains a call chain may pass through: a call
// that would make a longer one fails with grain.ErrTooLarge. Each link is
// linkFields strings on the wire (transport.MaxChainLen bounds them all).
const (
	maxChainDepth = 64
	linkFields    = 3
)

// outChain is the chain of a call made from ctx: the chain of the turn it
// belongs to followed by that turn; nil when ctx belongs to no turn.
func outChain(ctx context.Context) ([]link, error) {
	t := turnOf(ctx)
	if t == nil {
		return nil, nil
	}
	t.outOnce.Do(func() {
		if len(t.chain) >= maxChainDepth {
			t.outErr = fmt.Errorf("%w: call chain would pass through more than %d grains: %s",
				grain.ErrTooLarge, maxChainDepth, chainString(t.chain, t.a.id, t.method))
			return
		}
		a := t.a
		out := make([]link, len(t.chain), len(t.chain)+1)
		copy(out, t.chain)
		t.out = append(out, link{grain: a.id, method: t.method, silo: a.silo.id, inc: a.inc.id, seq: a.seq, turn: t.seq})
	})
	return t.out, t.outErr
}

// encodeChain is the wire form of a chain: per link its grain id, its
// method and "incarnation/seq/turn/silo".
func encodeChain(chain []link) []string {
	if len(chain) == 0 {
		return nil
	}
	out := make([]string, 0, linkFields*len(chain))
	for _, l := range chain {
		out = append(out, l.grain.String(), l.method,
			strconv.FormatInt(l.inc, 10)+"/"+strconv.FormatUint(l.seq, 10)+"/"+strconv.FormatUint(l.turn, 10)+"/"+l.silo)
	}
	return out
}

// decodeChain parses the chain of a request from another silo. A malformed
// one is grain.ErrBadRequest.
func decodeChain(ss []string) ([]link, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	if len(ss)%linkFields != 0 || len(ss)/linkFields > maxChainDepth {
		return nil, fmt.Errorf("%w: call chain of %d entries: want at most %d grains of %d entries each",
			grain.ErrBadRequest, len(ss), maxChainDepth, linkFields)
	}
	chain := make([]link, len(ss)/linkFields)
	for i := range chain {
		f := ss[i*linkFields : (i+1)*linkFields]
		id, err := grain.ParseID(f[0])
		if err != nil {
			return nil, fmt.Errorf("%w: call chain entry %d: %w", grain.ErrBadRequest, i, err)
		}
		parts := strings.SplitN(f[2], "/", 4)
		if len(parts) != 4 || parts[3] == "" {
			return nil, fmt.Errorf("%w: call chain entry %d: malformed activation %q", grain.ErrBadRequest, i, f[2])
		}
		inc, err1 := strconv.ParseInt(parts[0], 10, 64)
		seq, err2 := strconv.ParseUint(parts[1], 10, 64)
		tn, err3 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("%w: call chain entry %d: malformed activation %q", grain.ErrBadRequest, i, f[2])
		}
		chain[i] = link{grain: id, method: f[1], silo: parts[3], inc: inc, seq: seq, turn: tn}
	}
	return chain, nil
}

// chainString spells a chain and the call at its end for an error:
// "lobby.Player/alice.Whois -> lobby.Room/r1.Roster -> lobby.Player/alice.Profile".
func chainString(chain []link, target grain.ID, method string) string {
	var b strings.Builder
	for _, l := range chain {
		b.WriteString(l.grain.String())
		b.WriteByte('.')
		b.WriteString(l.method)
		b.WriteString(" -> ")
	}
	b.WriteString(target.String())
	b.WriteByte('.')
	b.WriteString(method)
	return b.String()
}

// A turn's token state, guarded by a.mu: holds (it has the token), its
// outstanding calls, and ended (its code returned). Calls of one turn may
// be made from several goroutines at once (a fan-out): the count can fall
// to 0 and rise again while the goroutine whose call returned last still
// waits for the token; and a goroutine the turn did not wait for may call
// after the turn ended. Neither may make the token go to two holders.

// beginWait gives up t's token while t waits on a call it made. Several
// calls of one turn may be outstanding at once (a fan-out): the token goes
// with the first and comes back after the last.
func (a *activation) beginWait(t *turn) {
	a.mu.Lock()
	if t.ended {
		// A call made after its turn ended, from a goroutine the turn did
		// not wait for: it has no token to give up.
		a.mu.Unlock()
		return
	}
	t.outstanding++
	if t.outstanding > 1 {
		a.mu.Unlock()
		return
	}
	a.waiting = append(a.waiting, t)
	if r := a.dropResumerLocked(t); r != nil {
		// The turn's previous calls all returned, but it had not got the
		// token back yet: it waits again, and the goroutine that waited
		// for the token goes on without it.
		a.mu.Unlock()
		r.ch <- false
		return
	}
	if !t.holds {
		a.mu.Unlock()
		return
	}
	t.holds = false
	a.handOffAndUnlock()
}

// endWait takes t's token back after the last of its calls returned,
// waiting for the turn that holds it to end or to wait on a call of its
// own. That wait is as long as that turn's code runs between calls.
func (a *activation) endWait(t *turn) {
	a.mu.Lock()
	if t.ended {
		a.mu.Unlock()
		return
	}
	t.outstanding--
	if t.outstanding > 0 {
		a.mu.Unlock()
		return
	}
	a.dropWaitingLocked(t)
	a.acquireLocked(t) // unlocks
}

// acquireLocked gives t the token, waiting for it if another turn holds
// it. It is called with a.mu held and unlocks it. It returns without the
// token if t waits on a call again meanwhile (see beginWait).
func (a *activation) acquireLocked(t *turn) {
	if !a.running {
		a.running, t.holds = true, true
		a.mu.Unlock()
		return
	}
	r := &resumer{t: t, ch: make(chan bool, 1)}
	a.resumers = append(a.resumers, r)
	a.mu.Unlock()
	<-r.ch
}

// endTurn marks t ended once its code returned, so that calls made from
// goroutines it did not wait for no longer touch the token; if such calls
// had taken it away, the turn takes it back first. It reports whether the
// activation is failing (see activation.failing), which no other turn can
// change while this one holds the token.
func (a *activation) endTurn(t *turn) (failing bool) {
	a.mu.Lock()
	t.ended = true
	if t.holds {
		failing = a.failing
		a.mu.Unlock()
		return failing
	}
	a.dropWaitingLocked(t)
	if r := a.dropResumerLocked(t); r != nil {
		r.ch <- false // buffered
	}
	a.acquireLocked(t)
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failing
}

// resumer is a turn waiting for the token after its calls returned.
type resumer struct {
	t  *turn
	ch chan bool // true: the token is the turn's; false: it waits again
}

func (a *activation) dropWaitingLocked(t *turn) {
	for i, w := range a.waiting {
		if w == t {
			a.waiting = append(a.waiting[:i], a.waiting[i+1:]...)
			return
		}
	}
}

func (a *activation) dropResumerLocked(t *turn) *resumer {
	for i, r := range a.resumers {
		if r.t == t {
			a.resumers = append(a.resumers[:i], a.resumers[i+1:]...)
			return r
		}
	}
	return nil
}

// handOffLocked is called by the token's holder when it gives the token up
// (a turn that waits or ends): a waiting turn whose call returned gets it
// (wake), else a goroutine starts for the calls that may start now (start),
// else the token is free.
func (a *activation) handOffLocked() (wake *resumer, start bool) {
	if len(a.resumers) > 0 {
		wake = a.resumers[0]
		a.resumers = append(a.resumers[:0], a.resumers[1:]...)
		wake.t.holds = true
		return wake, false
	}
	if a.status == statusValid && a.runnableLocked() {
		return nil, true
	}
	a.running = false
	return nil, false
}

// handOffAndUnlock is handOffLocked, then unlocks a.mu and wakes or starts
// what gets the token.
func (a *activation) handOffAndUnlock() {
	wake, start := a.handOffLocked()
	a.mu.Unlock()
	if wake != nil {
		wake.ch <- true
	}
	if start {
		a.silo.goTurns(a)
	}
}

// releaseToken gives the token up for good (the holder's goroutine is done
// with the activation).
func (a *activation) releaseToken() {
	a.mu.Lock()
	a.handOffAndUnlock()
}

// runnableLocked reports whether a call may start now.
func (a *activation) runnableLocked() bool {
	if a.ready.len() > 0 {
		return true
	}
	m := a.queue.head
	return m != nil && a.mayStartLocked(m)
}

// mayStartLocked reports whether m may start now, given the turns that wait
// on calls they made.
func (a *activation) mayStartLocked(m *message) bool {
	if len(a.waiting) == 0 || a.typ.reentrant {
		return true
	}
	if m.sys != nil {
		return false
	}
	f := m.method.Flags
	if f.Has(grain.AlwaysInterleave) {
		return true
	}
	if f.Has(grain.ReadOnly) {
		for _, w := range a.waiting {
			if !w.readOnly {
				return false
			}
		}
		return true
	}
	return false
}

// onChainLocked reports whether one of a's waiting turns is in chain: the
// call waits for the rest of the chain, whose end is m.
func (a *activation) onChainLocked(chain []link) bool {
	if len(a.waiting) == 0 {
		return false
	}
	for i := len(chain) - 1; i >= 0; i-- {
		l := &chain[i]
		if l.seq != a.seq || l.inc != a.inc.id || l.silo != a.silo.id {
			continue
		}
		for _, w := range a.waiting {
			if w.seq == l.turn {
				return true
			}
		}
	}
	return false
}

// deadlockError is the error of m, whose chain passes through a waiting
// turn of a that admits it not.
func (a *activation) deadlockError(m *message) error {
	why := "its type is not reentrant (grain.Reentrant, grain.WithCallChainReentrancy) and the method is not //granary:interleave"
	if a.status != statusValid {
		why = "the call arrived during its OnActivate or OnDeactivate"
	}
	err := fmt.Errorf("%w: call chain %s: %s waits on this chain and %s",
		grain.ErrDeadlock, chainString(m.chain, m.target, m.method.Name), a.id, why)
	s := a.silo
	now, last := s.nanotime(), s.deadlockLogAt.Load()
	if last == 0 || now-last >= int64(time.Second) {
		if s.deadlockLogAt.CompareAndSwap(last, now) {
			s.log.Warn("call refused: it would deadlock (logged at most once a second)",
				zap.Stringer("grain", a.id), zap.String("method", m.method.Name), zap.Error(err))
		}
	}
	return err
}
