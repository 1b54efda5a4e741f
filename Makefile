# flowmesh — the two commands a newcomer needs:
#   make run    build the library and run the demo (embedded engine, no server)
#   make test   run every test: Rust, C (ASan + valgrind), Python, Go, Node
#
# Other targets: lib, header, check-header, lint, install PREFIX=..., bench.

CARGO    ?= cargo
PREFIX   ?= /usr/local
RELEASE  := target/release
LIB_SO   := $(RELEASE)/libflowmesh.so
MAJOR    := 0
export FLOWMESH_LIB := $(CURDIR)/$(LIB_SO)

.PHONY: all lib run demo test test-rust test-c test-python test-go test-node test-install \
        header check-header lint install bench bench-quick clean

all: lib

## Build libflowmesh.so/.a, the flowmesh binary and include/flowmesh.h.
lib:
	$(CARGO) build --release --locked
	ln -sf libflowmesh.so $(RELEASE)/libflowmesh.so.$(MAJOR)

## Build and run the demo: publish + subscribe callback, a queue job, KV,
## through the C ABI on the durable embedded engine.
run: lib
	$(MAKE) -C examples/c
	examples/c/build/demo "file://$(CURDIR)/target/demo-data"

## Every test. Each part prints its own summary line.
test: lint check-header test-rust test-c test-install test-python test-go test-node
	@echo "make test: all suites passed"

test-rust: lib
	$(CARGO) test --release --locked -- --test-threads=2

test-c: lib
	tests/c/run.sh

test-install: lib
	tests/install/run.sh

test-python: lib
	bindings/python/test.sh

test-go: lib
	bindings/go/test.sh

test-node: lib
	bindings/node/test.sh

## Regenerate the header (build.rs writes it) and fail if the committed one differs.
header:
	$(CARGO) build --release --locked

check-header: header
	git diff --exit-code -- include/flowmesh.h || \
	  (echo "include/flowmesh.h is out of date: commit the regenerated header" && exit 1)
	../shared/tools/check-abi

## Formatting, clippy and the module layering (docs/ARCHITECTURE.md).
lint:
	scripts/check-layers
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

## Install lib, header, pkg-config and CMake files under $(PREFIX) (DESTDIR supported).
install: lib
	scripts/install.sh "$(DESTDIR)$(PREFIX)" "$(PREFIX)"

bench: lib
	bench/run.sh

bench-quick: lib
	bench/run.sh --quick

clean:
	$(CARGO) clean
	rm -rf examples/c/build tests/c/build
