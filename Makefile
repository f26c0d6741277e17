# The two commands of hepbatch (see README.md): `make test` and `make demo`.

CARGO ?= cargo

.PHONY: test demo cluster testbed images lint-chart fmt clippy

## test: formatting, lints, and every test (unit and real-cluster) in the workspace
test: testbed lint-chart
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

## demo: start the testbed, helm install the chart, run the operator with the chart's
## ServiceAccount, submit every example, show them succeed; the cluster stays up until Ctrl-C
demo:
	bash hack/demo.sh

## images: the container images this machine can build (images/build.sh)
images:
	bash images/build.sh

## lint-chart: helm lint --strict of the chart, with default values and with every option set
lint-chart: testbed
	"$$(bash tests/testbed/build.sh --bin-dir)/helm" lint --strict charts/hepbatch
	"$$(bash tests/testbed/build.sh --bin-dir)/helm" lint --strict charts/hepbatch \
	  -f charts/hepbatch/ci/all-options-values.yaml

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
