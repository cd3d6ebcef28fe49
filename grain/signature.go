package grain

import (
	"crypto/sha256"
	"encoding/binary"
	"reflect"
	"strings"
)

// Fingerprint returns the fingerprint of a signature text: the first 8
// bytes of its SHA-256, big-endian.
//
// The signature rule: a method's signature is the canonical text of its
// parameter types (after the context) and result types, in order, as Go
// prints them with package names: "(string, []string, int) (map[string]int,
// error)", "(bank.Amount) error", "(*time.Time, map[string][]money.Price)
// (bank.Statement, error)". Basic types, slices, arrays, maps and pointers
// are spelled out; a named type is its package name and type name
// ("money.Price"), not its fields. Its Fingerprint is the first 8 bytes of
// the SHA-256 of that text.
//
// So a call reaches a method only if caller and silo agree on the method's
// wire name and on the types of its parameters and results as written.
// Changing a parameter from int64 to int, or from []string to string, is
// incompatible (grain.ErrIncompatible), even where msgpack could convert:
// the rule is simple and conservative. The fields of a struct argument are
// not part of it: a struct evolves like a msgpack map (its tuple slot holds
// a map keyed by field name), so a field added on one side is zero on the
// other, and a field the receiver does not know is ignored. Renaming a
// named type or its package changes the signature; moving a type to
// another package of the same name does not. Type aliases are transparent.
func Fingerprint(signature string) uint64 {
	h := sha256.Sum256([]byte(signature))
	return binary.BigEndian.Uint64(h[:8])
}

// signatureOf returns the signature text of the function type fn, skipping
// its first skip parameters (a method expression's receiver and context).
func signatureOf(fn reflect.Type, skip int) string {
	var b strings.Builder
	b.WriteByte('(')
	for i := skip; i < fn.NumIn(); i++ {
		if i > skip {
			b.WriteString(", ")
		}
		b.WriteString(fn.In(i).String())
	}
	b.WriteString(") ")
	if fn.NumOut() == 1 {
		b.WriteString(fn.Out(0).String())
		return b.String()
	}
	b.WriteByte('(')
	for i := range fn.NumOut() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(fn.Out(i).String())
	}
	b.WriteByte(')')
	return b.String()
}
