# Granary: the two commands a newcomer needs are `make demo` and `make test`.

GO      ?= go
PKGS    := ./...
# Tests of packages with concurrency run under the race detector; all do.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all demo test vet generate check-generate bench bench-micro build tidy

all: build test

build:
	$(GO) build $(PKGS)

## demo: run the bank sample on an embedded etcd with two silos
demo:
	$(GO) run ./samples/bank/cmd/demo

## test: vet, then every test with the race detector and goroutine-leak checks
test: vet
	$(GO) test $(TESTFLAGS) $(PKGS)

vet:
	$(GO) vet $(PKGS)

## generate: regenerate every granary-gen output
generate:
	$(GO) generate $(PKGS)

## check-generate: fail if generated code is stale
check-generate: generate
	@git diff --exit-code -- '*_granary.go' || \
		(echo "generated code is stale: run 'make generate' and commit the result" >&2; exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- '*_granary.go')" || \
		(echo "make generate created files that are not committed:" >&2; git status --porcelain -- '*_granary.go' >&2; exit 1)

## bench: in-process benchmarks (calls/s, latency, activations/s, bytes per idle activation)
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./runtime/

## bench-micro: every benchmark of every package
bench-micro:
	$(GO) test -run '^$$' -bench . $(PKGS)
