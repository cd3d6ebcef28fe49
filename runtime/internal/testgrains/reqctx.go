package testgrains

import "context"

// ReqCtx is a grain that reports the request context its calls carry and
// passes it on to other ReqCtx grains, for the tests of request values
// and cancellation.
//
//granary:grain name=test.ReqCtx
type ReqCtx interface {
	// Seen reports this activation's silo and what its call carries.
	Seen(ctx context.Context) (Seen, error)
	// Relay calls Seen on the ReqCtx grain next with its own context and
	// returns what that grain saw.
	Relay(ctx context.Context, next string) (Seen, error)
	// Block waits until its context is done and records, under token, in
	// this process, when it started and when the context ended.
	Block(ctx context.Context, token string) error
	// RelayBlock calls Block(token) on the ReqCtx grain next with its own
	// context.
	RelayBlock(ctx context.Context, next, token string) error
	// Blocked returns the record of the Block call made under token in
	// this process (zero if there was none).
	Blocked(ctx context.Context, token string) (BlockRecord, error)
}

// Seen is what a ReqCtx grain saw of its call.
type Seen struct {
	// Silo hosts the grain.
	Silo string
	// Values are the call's request values (grain.RequestValues).
	Values map[string]string
	// Identity is the caller's identity's name, "" if none.
	Identity string
}

// BlockRecord is when a ReqCtx.Block call started and when its context
// ended, in Unix nanoseconds on the host (0: not yet), and why it ended.
type BlockRecord struct {
	Started, Done int64
	Err           string
}
