# The two commands of hepbatch (see README.md): `make test` and `make demo`.

CARGO ?= cargo

.PHONY: test demo cluster testbed cvmfs node-images images lint-chart fmt clippy

## test: formatting, lints, and every test (unit, real-mount, real-cluster, real-node) in the
## workspace with the real CVMFS client; then the CSI mount suites and the end-to-end
## suite again with the squashfuse stand-in (a site without the real client)
test: testbed cvmfs node-images images lint-chart
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	HEPBATCH_CSI_TEST_BACKEND=squashfuse $(CARGO) test -p hepbatch-csi \
	  --test mounts --test load --test services --test controller --test sanity
	HEPBATCH_E2E_BACKEND=squashfuse $(CARGO) test -p hepbatch-tests --test e2e

## demo: start the testbed, helm install the chart, run the operator with the chart's
## ServiceAccount, submit every example, show them succeed; the cluster stays up until Ctrl-C
demo:
	bash hack/demo.sh

## images: the operator and CSI images (images/build.sh; needs the CVMFS build)
images: cvmfs
	bash images/build.sh

## cvmfs: the real CVMFS client and server tools (built from the vendored source, cached)
cvmfs:
	@bash tests/cvmfs/build.sh >/dev/null

## node-images: the pause and analysis base images of the testbed's real nodes (cached)
node-images:
	@bash images/node-images.sh >/dev/null

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
