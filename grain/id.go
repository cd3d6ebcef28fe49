package grain

import (
	"fmt"
	"strings"
)

// ID identifies a grain: the registered name of its type and a key chosen by
// the caller. Grains always exist logically; an ID is all it takes to call
// one.
type ID struct {
	Type string
	Key  string
}

// String returns the canonical form "type/key".
func (id ID) String() string { return id.Type + "/" + id.Key }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id.Type == "" && id.Key == "" }

// ParseID parses the "type/key" form produced by ID.String. The key may
// itself contain slashes; the type may not.
func ParseID(s string) (ID, error) {
	typ, key, ok := strings.Cut(s, "/")
	if !ok || typ == "" {
		return ID{}, fmt.Errorf("grain: malformed id %q: want type/key", s)
	}
	return ID{Type: typ, Key: key}, nil
}
