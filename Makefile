# The two commands of hepbatch (see README.md): `make test` and `make demo`.

CARGO ?= cargo

.PHONY: test demo testbed fmt clippy unit

## test: formatting, lints, and every test (unit and real-cluster) in the workspace
test: testbed
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

## demo: build what is needed and start a testbed cluster until Ctrl-C
demo: testbed
	$(CARGO) run -q -p hepbatch-tests --bin testbed -- up

## testbed: build the Kubernetes components from Go modules (cached outside the clone)
testbed:
	@bash tests/testbed/build.sh >/dev/null

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
