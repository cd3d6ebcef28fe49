// Package transport carries grain calls between processes: from silo to
// silo, and from a client to its gateway silos. It moves envelopes (a
// request with its encoded arguments, or a response with its encoded
// result or error) and knows nothing of activations, directories or grain
// types beyond their names.
//
// A Server accepts connections and hands each request to a Handler, which
// replies later through a Replier; a Client calls servers by address:
//
//	srv, err := transport.NewServer(transport.ServerConfig{Logger: log}, handler)
//	go srv.Serve(lis)
//	defer srv.Stop(ctx)
//
//	c, err := transport.NewClient(transport.ClientConfig{Logger: log})
//	defer c.Close()
//	resp, err := c.Call(ctx, "10.0.0.2:7000", &transport.Envelope{
//		Target: grain.ID{Type: "bank.Account", Key: "42"}, Method: "Deposit", Fingerprint: fp, Body: args,
//	})
//
// # Streams
//
// The transport is one gRPC service, "granary.Transport", with one
// bidirectional streaming method, "Connect", described by a hand-written
// grpc.ServiceDesc (no protoc). Messages use the msgpack codec registered
// under CodecName ("granary-msgpack"), chosen per stream; the "proto" codec
// is left alone.
//
// A Client keeps one connection with one stream per server address,
// dialed on first use. Requests flow from the dialing side to the
// listening side and responses come back on the same stream: a silo that
// needs to call a peer dials it, so two silos that call each other use two
// streams, one per direction. Requests on a stream are multiplexed by a
// request id that the client assigns (1, 2, 3, ...; never reused on a
// stream); responses may come back in any order.
//
// # Frames and envelopes
//
// Every gRPC message on a stream is a frame, the msgpack array
//
//	[version, [envelope, ...]]
//
// with version 2. An envelope is a msgpack array whose layout depends on
// its kind, field 0; field 1 is the request id:
//
//	request, one-way: [kind, id, type, key, method, fingerprint, flags, timeout_ns, hops, chain, context, body]
//	response:         [kind, id, status, body, err_code, err_message, redirect_silo, redirect_addr, err_outcome]
//
// kind is 1 (request), 2 (one-way) or 3 (response); status 0 (ok), 1
// (error) or 2 (not here). type and key are the target grain's ID; method
// is the method's wire name (a str of at most MaxMethodName bytes of UTF-8
// without control characters) and fingerprint the uint64 fingerprint of
// the caller's signature of it (see package grain). Version 1 carried a
// method index instead; its frames are refused as a whole. chain is
// nil or an array of strings, context nil or a map of strings, body nil or
// bin (the arguments or the result, encoded by the runtime). The timeout is
// relative, in nanoseconds, so hosts need not agree on the time of day; 0
// means none. Decoders accept any msgpack encoding of a value of the right
// family and skip trailing fields they do not know, so fields can be
// appended in later versions.
//
// A client's frame may carry a third field, the ids of requests its
// callers gave up on (see Cancellation below):
//
//	[version, [envelope, ...], [cancelled_id, ...]]
//
// Receivers from before cancellation skip it as a trailing field.
//
// Each stream has one writer goroutine that sends frames from a bounded
// queue. When it is idle, the first envelope queued goes out at once (the
// writer only yields the processor once, so that goroutines already
// runnable may queue theirs); envelopes queued while a frame is being
// written go out together in the next one. There is no timer and no
// artificial delay. Stats reports frames and envelopes sent and received.
//
// # Calls, timeouts and errors
//
// Client.Call waits for the response until its ctx ends; Client.Send
// queues a one-way request and returns. Both put the time left until their
// ctx's deadline in the request. For a request, the server turns it into
// the deadline of the context it passes to the Handler, on its own clock;
// that context is also cancelled when the stream dies. (A one-way request
// gets the stream's context and its Timeout as a plain field.) When the
// caller's ctx expires, Call returns an error matching grain.ErrTimeout and
// context.DeadlineExceeded.
//
// # Cancellation
//
// When a caller's ctx is cancelled (not past its deadline, which the
// server already knows) while Call waits, Call returns an error matching
// context.Canceled and queues a cancellation of the request on the same
// stream, if the queue has room. The server cancels the Handler's context
// of that request if it is still in flight; the Handler still replies.
// A cancellation of a request already answered, or of an id the stream
// never admitted, is ignored: the server keeps no state for it. One-way
// requests are never cancelled. Stats counts cancellations sent, received
// and applied.
//
// An error response carries grain.CodeOf(err) and err.Error(); the caller
// gets a *grain.RemoteError with that code and message, so errors.Is
// matches the sentinel defined with the code (grain.ErrOverloaded, a
// grain.NewError of the application, ...). A not-here response makes Call
// return a *NotHereError with the silo the responder points to.
//
// # Limits and malformed input
//
// Limits bound frames (gRPC's maximum message size, 16 MiB by default),
// envelope bodies (4 MiB), envelope headers, that is everything but the
// body (64 KiB), and envelopes per frame (1024); call chains and request
// contexts hold at most MaxChainLen and MaxContextLen entries.
//
//   - A request over a limit fails in Call or Send, before anything is sent,
//     with an error wrapping grain.ErrTooLarge (grain.ErrBadRequest for a
//     malformed one: no target type, a bad method name, a negative timeout).
//   - A response over a limit is replaced by an error response wrapping
//     grain.ErrTooLarge.
//   - A received envelope that is malformed (unknown kind, missing fields,
//     fields of the wrong type, no target type) or over a limit is
//     rejected and logged; if it is a request whose id could be read, it is
//     answered with an error response with the code of grain.ErrBadRequest
//     or grain.ErrTooLarge. The other envelopes of the frame are processed.
//   - A frame that cannot be parsed at all (not msgpack, truncated, wrong
//     version, too many envelopes, nested too deeply) ends the stream: the
//     server closes it with codes.InvalidArgument, and other streams carry
//     on. A frame over the size limit ends the stream with
//     codes.ResourceExhausted.
//
// The decoder never panics on any input (FuzzDecodeFrame), never trusts a
// length before checking it against the bytes left, and copies what it
// keeps, so envelopes do not pin frame buffers.
//
// # Backpressure
//
// A server never lets one peer hold up another, or a grain:
//
//   - Replies never wait for room in a stream's queue, which holds
//     MaxInflightPerStream + QueueSize envelopes: the replies of the
//     requests admitted always fit, and answers to requests rejected at
//     once take at most QueueSize places (while they fill them, the
//     stream's reader waits, and the peer's sends with it). A stream whose
//     writer makes no progress for SendStallTimeout while replies wait
//     (the peer does not read them) has its connection closed.
//   - Requests whose reply has not been sent are capped per stream
//     (MaxInflightPerStream, 4096) and per connection
//     (MaxInflightPerConnection, 8192); beyond the caps they are answered
//     at once with grain.ErrOverloaded. A connection carries at most
//     MaxStreamsPerConnection (16) streams.
//   - MaxRequestTimeout caps the timeout a request asks for.
//   - A connection that sends more than MalformedPerSecond (1000) malformed
//     requests or frames per second is slowed down: its streams' readers
//     wait until it is back within that budget. Warnings about a peer are
//     logged at most once a second per host.
//   - Client.Send never waits for room: a full queue fails it with
//     grain.ErrOverloaded. Client.Call waits for room until its ctx ends.
//
// # Failures
//
// When a stream breaks (the peer stopped or crashed, the connection was
// cut, keepalive pings went unanswered), every call in flight on it fails
// at once with an error wrapping grain.ErrOutcomeUnknown (it may have run),
// and the next call dials again. Dial failures, and calls that find the
// stream already broken, wrap grain.ErrSiloUnavailable: they were not
// sent. A stream the server refuses as unauthenticated (gRPC status
// Unauthenticated: its credentials were refused, or could not be sent)
// fails its calls with grain.ErrUnauthenticated instead: the server reads
// nothing of a stream it refuses, so none of them ran. Delivery is at
// most once: a call that failed with ErrOutcomeUnknown or timed out after
// its request was sent may or may not have run. Error responses carry grain.OutcomeOf of the responder's error.
//
// Server.Stop drains gracefully: it stops accepting connections, answers new
// requests with grain.ErrSiloUnavailable, waits for the replies to the
// requests in flight and ends the streams; if its ctx ends first, it closes
// every connection at once. Client.Close fails the calls in flight and
// closes every connection. Both return when their goroutines have exited.
package transport
