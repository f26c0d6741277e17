# The two commands of hepbatch (see README.md): `make test` and `make demo`.

CARGO ?= cargo

.PHONY: test demo cluster testbed fmt clippy

## test: formatting, lints, and every test (unit and real-cluster) in the workspace
test: testbed
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

## demo: start the testbed, run the operator, submit examples/hello.yaml, show it succeed;
## the cluster stays up until Ctrl-C
demo:
	bash hack/demo.sh

## cluster: just a testbed cluster until Ctrl-C
cluster: testbed
	$(CARGO) run -q -p hepbatch-tests --bin testbed -- up

## testbed: build the Kubernetes components from Go modules (cached outside the clone)
testbed:
	@bash tests/testbed/build.sh >/dev/null

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
