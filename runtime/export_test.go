package runtime

import "github.com/granary-rt/granary/directory"

// WithDirectory returns cfg with its grain directory replaced by d: a test
// hook for the tests of this package, not part of the API.
func WithDirectory(cfg Config, d directory.Directory) Config {
	cfg.directory = d
	return cfg
}
