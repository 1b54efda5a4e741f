# flowmesh — the two commands a newcomer needs:
#   make run    build the library and run the demo (embedded engine, no server)
#   make test   run every test: Rust, C (ASan + valgrind), Python, Go, Node
# Both first run scripts/setup.sh, which installs what is missing on a Debian
# machine when root (valgrind, cmake, pkg-config, ...) or names it otherwise.
#
# Other targets: lib, header, check-header, lint, install PREFIX=..., bench,
# packages (python-dist, npm, deb: into <target>/python, npm, debian), docs,
# soak (30 min, SOAK_MINUTES), fuzz (libFuzzer, FUZZ_RUNS per target).

CARGO    ?= cargo
PREFIX   ?= /usr/local
# cargo's target directory as cargo resolves it (CARGO_TARGET_DIR, .cargo/config.toml).
TARGET_DIR := $(shell CARGO=$(CARGO) scripts/target-dir.sh)
ifeq ($(TARGET_DIR),)
  $(error cannot determine cargo's target directory: scripts/target-dir.sh failed)
endif
RELEASE  := $(TARGET_DIR)/release
LIB_SO   := $(RELEASE)/libflowmesh.so
MAJOR    := $(shell scripts/version.sh major)
export FLOWMESH_LIB := $(LIB_SO)
export FLOWMESH_BIN := $(RELEASE)/flowmesh
export FLOWMESH_LIB_DIR := $(RELEASE)

.PHONY: all setup setup-run lib run demo test test-rust test-nats-faults test-nats-cluster test-c test-python test-go test-node test-websocket test-web test-install \
        test-linearizability header check-header lint install bench bench-quick bench-lax soak fuzz clean \
        packages python-dist npm deb docs

all: lib

## Build libflowmesh.so/.a, the flowmesh binary and include/flowmesh.h.
lib:
	$(CARGO) build --release --locked
	ln -sf libflowmesh.so $(RELEASE)/libflowmesh.so.$(MAJOR)

## Check (and as root on Debian, install) what the suites need; fast when all is there.
setup:
	scripts/setup.sh test

setup-run:
	scripts/setup.sh run

## Build and run the demo: publish + subscribe callback, a queue job, KV,
## through the C ABI on the durable embedded engine.
run: setup-run lib
	$(MAKE) -C examples/c LIBDIR=$(RELEASE)
	examples/c/build/demo "file://$(TARGET_DIR)/demo-data"

## Every test. Each part prints its own summary line.
test: setup lint check-header test-rust test-nats-faults test-c test-install test-python test-go test-node test-websocket test-web test-linearizability
	@echo "make test: all suites passed"

test-rust: setup lib
	$(CARGO) test --release --locked -- --test-threads=2

## Gateways, failover and cluster faults on 3-node JetStream clusters, one
## test at a time (each starts its own cluster; about 5 minutes).
test-nats-faults: setup lib
	$(CARGO) test --release --locked --test nats_faults -- --ignored --test-threads=1

## The contract suites on a 3-node JetStream cluster (slow on two cores; not in make test).
test-nats-cluster: setup lib
	$(CARGO) test --release --locked --test contract --test events --test metrics nats_cluster -- --ignored --test-threads=1

test-c: setup lib
	tests/c/run.sh

test-install: setup lib
	tests/install/run.sh

test-python: setup lib
	bindings/python/test.sh

test-go: setup lib
	bindings/go/test.sh

test-node: setup lib
	bindings/node/test.sh

## The JSON WebSocket protocol of `serve --ws`, from Python's websockets client.
test-websocket: setup lib
	tests/websocket/run.sh

## The browser client and the web console in headless Chromium (playwright-core).
test-web: setup lib
	bindings/web/test.sh

## KV and queue histories under broker kills, pauses and cut links, checked with Porcupine.
test-linearizability: setup lib
	tests/linearizability/run.sh

## Regenerate the header (build.rs writes it) and fail if the committed one differs.
header:
	$(CARGO) build --release --locked

check-header: header
	git diff --exit-code -- include/flowmesh.h || \
	  (echo "include/flowmesh.h is out of date: commit the regenerated header" && exit 1)
	scripts/check-abi

## libFuzzer targets of fuzz/ (nightly toolchain), FUZZ_RUNS executions each
## (default 10^6), corpus kept in fuzz/corpus (docs/FUZZING.md).
FUZZ_RUNS ?= 1000000
fuzz:
	FUZZ_RUNS=$(FUZZ_RUNS) scripts/fuzz.sh

## Formatting, clippy, the module layering (docs/ARCHITECTURE.md) and the
## crate's rustdoc (broken links, missing docs; only this crate, so it is quick).
lint: setup
	scripts/check-layers
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --release --locked --no-deps

## Install lib, header, pkg-config and CMake files under $(PREFIX) (DESTDIR supported).
install: lib
	scripts/install.sh "$(DESTDIR)$(PREFIX)" "$(PREFIX)"

## Mixed traffic for SOAK_MINUTES (30) with broker kills; loss, duplicates, RSS/fd plot.
soak: lib
	scripts/soak.sh

## Packages, from the library built by `lib` (no second cargo build); <target>
## is cargo's target directory. See docs/VERSIONING.md for the version they carry.
packages: python-dist npm deb

# The manylinux wheel (libflowmesh.so inside) and the sdist (the crate inside).
python-dist: lib
	scripts/package-python.sh $(TARGET_DIR)/python

# flowmesh-VERSION.tgz with a prebuilt linux-x64 library; builds from source elsewhere.
npm: lib
	scripts/package-node.sh $(TARGET_DIR)/npm

# libflowmesh0, libflowmesh-dev, flowmesh (CLI + systemd unit) .deb files.
deb: lib
	scripts/package-deb.sh $(TARGET_DIR)/debian

## One browsable site under <target>/docs: Rust, C header, Python, Go, Node.
docs:
	scripts/docs.sh $(TARGET_DIR)/docs

bench: lib
	bench/run.sh

bench-quick: lib
	bench/run.sh --quick

## The Python LAX client (flowmesh.lax) vs nats-py on one nats-server -> bench/results/lax.md
bench-lax: lib
	bench/lax/run.sh

clean:
	$(CARGO) clean
	rm -rf examples/c/build tests/c/build
