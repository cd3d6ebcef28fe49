package codec_test

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/granary-rt/granary/grain/codec"
)

type benchArgs struct {
	_msgpack struct{} `msgpack:",as_array"`
	A0       int64
	A1       string
}

// BenchmarkUnmarshal compares a typical request body decoded with and
// without the check.
func BenchmarkUnmarshal(b *testing.B) {
	body, _ := msgpack.Marshal(&benchArgs{A0: 42, A1: "hello"})
	big, _ := msgpack.Marshal(&points{V: make([]point, 1000)})
	for _, bc := range []struct {
		name string
		body []byte
		into func() any
	}{
		{"body=small", body, func() any { return new(benchArgs) }},
		{"body=1000-structs", big, func() any { return new(points) }},
	} {
		b.Run(bc.name+"/decoder=msgpack", func(b *testing.B) {
			for b.Loop() {
				if err := msgpack.Unmarshal(bc.body, bc.into()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/decoder=codec", func(b *testing.B) {
			for b.Loop() {
				if err := codec.Unmarshal(bc.body, bc.into()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
