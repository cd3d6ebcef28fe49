// Package codec decodes msgpack bytes that come from outside the process:
// request arguments and replies from the network, directory entries,
// membership and reminder records from etcd, grain state from storage.
// Every such decode in Granary goes through Unmarshal.
//
// Unmarshal first walks the bytes once without allocating and rejects,
// with an error wrapping ErrMalformed, anything that is not exactly one
// well-formed msgpack value:
//
//   - a declared length (str, bin, ext) longer than the bytes that remain;
//   - an array of n elements with fewer than n bytes left, a map of n
//     entries with fewer than 2n (every value takes at least one byte);
//   - containers nested more than MaxDepth deep;
//   - the type byte 0xc1, which msgpack never uses;
//   - a truncated value, and bytes after the value.
//
// Only then does it decode with github.com/vmihailenco/msgpack/v5, and a
// panic of that decoder (it has some, e.g. nil into a time.Time) becomes
// an error.
//
// The bound this gives: decoding n bytes allocates O(n). Every declared
// length is at most the bytes present, so the only amplification left is
// the size of the Go values themselves: an array of n one-byte elements
// (0, nil, an empty map) decodes into n elements of the target type: the
// msgpack decoder allocates the slice twice over (a zeroed slice of n
// elements, then the slice it appends that to), 2 * n * unsafe.Sizeof(elem)
// bytes, plus per element what the element type allocates for an empty
// value (a pointer element allocates its struct). For a []int64 that is
// 16 bytes per input byte; callers that accept large
// inputs bound len(data) (the transport bounds bodies, storage bounds
// states). Decoding is linear in len(data) in time too.
//
// Usage:
//
//	var args depositArgs
//	if err := codec.Unmarshal(body, &args); err != nil {
//		return fmt.Errorf("%w: bank.Account.Deposit: %w", grain.ErrBadRequest, err)
//	}
//
// ValueLen applies the same checks to the value a larger buffer starts
// with and returns its length; the transport's frame decoder skips values
// with it, so there is one walker of untrusted msgpack.
//
// The package imports nothing of Granary, so that package grain can use it
// too.
package codec
