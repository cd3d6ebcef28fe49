# Granary: the two commands a newcomer needs are `make demo` and `make test`.

GO      ?= go
PKGS    := ./...
# Tests of packages with concurrency run under the race detector; all do.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all demo test chaos chaos-broken vet generate check-generate bench bench-micro build tidy

all: build test

build:
	$(GO) build $(PKGS)

## demo: the bank sample as a real cluster: an embedded etcd, three silo
## processes and an HTTP frontend process; one silo is killed with -9
demo:
	$(GO) build -o bin/silo ./samples/bank/cmd/silo
	$(GO) build -o bin/web ./samples/web/cmd/web
	$(GO) build -o bin/demo ./samples/bank/cmd/demo
	./bin/demo

## test: vet, then every test with the race detector and goroutine-leak checks,
## then the tests that need a race-free build's speed (100,000 reminders)
test: vet
	$(GO) test $(TESTFLAGS) $(PKGS)
	$(GO) test -count=1 -timeout 10m -run '^TestRemindersAtScale$$' ./runtime/

## chaos: the fault-injection test's long pass (runtime/internal/chaos; needs root):
## 3 silo processes and an etcd process under kill -9, SIGSTOP past the lease,
## etcd restarts and a partition of one silo from etcd for CHAOS_DURATION (10m),
## then a linearizability check of every key's history (make test runs 40 s of it)
CHAOS_DURATION ?= 10m
chaos:
	GRANARY_CHAOS_DURATION=$(CHAOS_DURATION) $(GO) test -race -count=1 -timeout 60m -v \
		-run '^TestFaultInjection$$' ./runtime/internal/chaos/

## chaos-broken: the same pass with the silos built with fencing broken on purpose
## (build tag granary_brokenfencing); it succeeds only if the checker reports a
## history that is not linearizable (CHAOS_BROKEN_DURATION, 40s)
CHAOS_BROKEN_DURATION ?= 40s
chaos-broken:
	@out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	GRANARY_CHAOS_BROKEN_FENCING=1 GRANARY_CHAOS_DURATION=$(CHAOS_BROKEN_DURATION) \
		$(GO) test -race -count=1 -timeout 30m -v -run '^TestFaultInjection$$' ./runtime/internal/chaos/ >"$$out" 2>&1; \
	rc=$$?; cat "$$out"; \
	if [ $$rc -eq 0 ]; then echo "chaos-broken: the checker did not catch the broken fencing" >&2; exit 1; fi; \
	grep -q 'is not linearizable' "$$out" || { echo "chaos-broken: the test failed, but not on a linearizability violation" >&2; exit 1; }; \
	echo "chaos-broken: as it must, the checker caught the broken fencing"

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

## bench: the runtime's benchmarks, then one summary line per workload:
##   W0-inproc      in-process calls, 64 callers over 10,000 active grains
##   W1-remote      a client process calling 2 silo processes (gRPC on loopback), 64 callers, 10,000 grains, 10 s;
##                  twice: plaintext (tls=off) and mutual TLS between client and silos (tls=on)
##   W2-activation  200,000 fresh grains activated through the client, each registered in etcd
##   W4-pg-*        cold activation with state read from PostgreSQL (p50/p99); write-through writes/s of one silo
##   W5-reminders   100,000 reminders (period 10 s) over 3 silos, each fires exactly as due: ticks/s,
##                  due-to-delivery delay p50/p99 of first (activating) and later ticks, ticks per CPU-second
##   W6-malformed-flood  p99 of valid calls to a silo alone and while one peer floods it with malformed
##                  requests (the default per-connection budget of malformed requests)
## The cluster benchmarks (bench_cluster_test.go) run their workload once whatever -benchtime says.
## "other processes" is CPU the rest of the machine took meanwhile: compare runs only when it is near 0.
## GRANARY_BENCH_PROFILE=<dir> make bench also writes CPU profiles of every process of W1 and W2.
bench:
	@out=$$(mktemp) rc=$$(mktemp); trap 'rm -f "$$out" "$$rc"' EXIT; \
	{ $(GO) test -run '^$$' -bench . -benchtime 3s -timeout 10m ./runtime/ 2>&1; echo $$? >"$$rc"; } | tee "$$out"; \
	echo; echo "== make bench summary =="; \
	awk 'function dur(us) { return us >= 1000 ? sprintf("%.1fms", us / 1000) : sprintf("%dµs", us) } \
	/^Benchmark[^ \t]*[ \t]+[0-9]+[ \t]/ { \
		label = ""; \
		if ($$1 ~ /^BenchmarkCall\//) label = "W0-inproc"; \
		else if ($$1 ~ /^BenchmarkActivation\//) label = "W0-activation"; \
		else if ($$1 ~ /^BenchmarkIdleActivationHeap\//) label = "W0-idle-heap"; \
		else if ($$1 ~ /^BenchmarkClusterRemoteCall/) { label = "W1-remote"; \
			if (match($$1, /tls=[a-z]+/)) label = label " (" substr($$1, RSTART, RLENGTH) ")"; } \
		else if ($$1 ~ /^BenchmarkClusterActivation/) label = "W2-activation"; \
		else if ($$1 ~ /^BenchmarkPostgresColdActivation/) label = "W4-pg-cold-activation"; \
		else if ($$1 ~ /^BenchmarkPostgresWrites/) label = "W4-pg-writes"; \
		else if ($$1 ~ /^BenchmarkReminders/) label = "W5-reminders"; \
		else if ($$1 ~ /^BenchmarkMalformedFlood\/malformed-budget=default/) label = "W6-malformed-flood"; \
		else if ($$1 ~ /^BenchmarkGrainToGrain\//) label = "W7-grain-to-grain " substr($$1, 23); \
		if (label == "") next; \
		split("", m); for (i = 3; i < NF; i += 2) m[$$(i + 1)] = $$i; \
		line = label ":"; \
		if ("calls/s" in m) line = line sprintf(" %d calls/s", m["calls/s"]); \
		if ("activations/s" in m) line = line sprintf(" %d activations/s", m["activations/s"]); \
		if ("writes/s" in m) line = line sprintf(" %d writes/s", m["writes/s"]); \
		if ("ticks/s" in m) line = line sprintf(" %d ticks/s", m["ticks/s"]); \
		if ("ticks/cpu-s" in m) line = line sprintf(" %d ticks per CPU-second,", m["ticks/cpu-s"]); \
		if ("first-p50-µs" in m) line = line " first ticks (activating) p50=" dur(m["first-p50-µs"]) " p99=" dur(m["first-p99-µs"]) ", later ticks"; \
		if ("B/activation" in m) line = line sprintf(" %d B per idle activation", m["B/activation"]); \
		if ("p50-µs" in m) line = line " p50=" dur(m["p50-µs"]) " p99=" dur(m["p99-µs"]); \
		if ("p99-ratio" in m) line = line sprintf(" valid calls p99 %s alone, %s under the flood (%.2fx); %d malformed requests answered/s", \
			dur(m["unloaded-p99-µs"]), dur(m["flooded-p99-µs"]), m["p99-ratio"], m["malformed/s"]); \
		if ("client-cores" in m) line = line sprintf(" (cores: client %.2f, silos %.2f, etcd %.2f", \
			m["client-cores"], m["silo-cores"], m["etcd-cores"]) \
			(("other-cores" in m) ? sprintf("; other processes %.2f)", m["other-cores"]) : ")"); \
		print line; n++ } \
	END { if (n == 0) print "no benchmark results" }' "$$out" | sort; \
	exit $$(cat "$$rc")

## bench-micro: every benchmark of every package
bench-micro:
	$(GO) test -run '^$$' -bench . $(PKGS)
