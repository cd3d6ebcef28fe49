package grain

import "time"

// TypeConfig is the per-type configuration assembled from TypeOptions. Zero
// fields mean "use the silo's default".
type TypeConfig struct {
	// CollectionAge is how long an activation may stay idle before it is
	// deactivated. Silo default: 15 minutes.
	CollectionAge time.Duration
	// MailboxLimit is how many calls may wait for one activation; beyond it
	// calls fail at once with ErrOverloaded. Silo default: 1000.
	MailboxLimit int
}

// TypeOption configures a grain type at registration. Options are sealed:
// only this package defines them.
type TypeOption interface {
	applyType(*TypeConfig)
}

type typeOptionFunc func(*TypeConfig)

func (f typeOptionFunc) applyType(c *TypeConfig) { f(c) }

// WithCollectionAge sets how long an activation of this type may be idle
// before it is deactivated and its state written.
func WithCollectionAge(d time.Duration) TypeOption {
	return typeOptionFunc(func(c *TypeConfig) { c.CollectionAge = d })
}

// WithMailboxLimit bounds the number of calls waiting for one activation of
// this type. Calls beyond it fail at once with ErrOverloaded.
func WithMailboxLimit(n int) TypeOption {
	return typeOptionFunc(func(c *TypeConfig) { c.MailboxLimit = n })
}

// NewTypeConfig applies opts to a zero TypeConfig.
func NewTypeConfig(opts ...TypeOption) TypeConfig {
	var c TypeConfig
	for _, o := range opts {
		o.applyType(&c)
	}
	return c
}

// StateConfig is the per-state configuration assembled from StateOptions.
type StateConfig struct {
	// Storage names the storage provider; "" is the silo's default.
	Storage string
}

// StateOption configures one persistent state.
type StateOption interface {
	applyState(*StateConfig)
}

type stateOptionFunc func(*StateConfig)

func (f stateOptionFunc) applyState(c *StateConfig) { f(c) }

// WithStorage selects a named storage provider configured on the silo.
func WithStorage(name string) StateOption {
	return stateOptionFunc(func(c *StateConfig) { c.Storage = name })
}
