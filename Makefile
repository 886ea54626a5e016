# sensor_fusion: the two commands are `make demo` and `make test`; both set up a fresh
# machine by themselves (scripts/setup.sh: Debian packages, pinned ROS 2 Jazzy wheels or
# a sourced system Jazzy, fusion_msgs).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
ROS := source scripts/ros-env.sh &&
CARGO_FLAGS ?= --release --locked

.PHONY: all setup build install test test-fast test-rust test-e2e test-long demo bench soak fuzz env clean

all: build

setup:
	@bash scripts/setup.sh
	@bash scripts/fetch-weights.sh models/weights/smollm2.json

build: setup
	$(ROS) cargo build $(CARGO_FLAGS) --workspace --bins

# The colcon/ament install layout; `make install PREFIX=/opt/sensor_fusion`.
PREFIX ?= $(CURDIR)/install
install: build
	bash scripts/install.sh $(PREFIX)

# Unit tests (fusion/ needs no ROS; nodes/ links r2r), then the end-to-end tests over DDS.
test: build test-rust test-e2e

# Library unit tests and tests/*.rs; the binaries hold no tests, and building each of the 18
# again as a test harness (each links Burn) only cost CI time.
# The ImageNet backbone only the loader's test (and --backbone training) reads.
test-rust: setup
	@bash scripts/fetch-weights.sh models/weights/efficientnet_lite0.json
	$(ROS) cargo test $(CARGO_FLAGS) --workspace --lib --test '*'

test-e2e: build install
	@bash scripts/setup.sh --test-peers
	$(ROS) source $(PREFIX)/local_setup.bash && python -m pytest tests -q -m 'not long' --durations=15

# A quick tier while you work (a few minutes once built): the library unit tests and the
# end-to-end tests marked fast (bad input over DDS, bags against rosbags, launch parsing).
# It needs no test peer (llama.cpp); `make test` runs everything.
test-fast: build install
	$(ROS) cargo test $(CARGO_FLAGS) --workspace --lib --test simulated_scenes
	$(ROS) source $(PREFIX)/local_setup.bash && python -m pytest tests -q -m fast --durations=5

# The tests marked long (the ten-minute nominal run: 2.4 min on 2 cores); not in `make test`.
test-long: build install
	@bash scripts/setup.sh --test-peers
	$(ROS) source $(PREFIX)/local_setup.bash && python -m pytest tests -q -m long

demo: build install
	bash scripts/demo.sh

# Benchmarks: programs that print JSON.
bench: build install
	@bash scripts/setup.sh --test-peers
	bash scripts/bench.sh

# A soak (not in CI): SOAK_SECONDS (default 1800) of nominal load through the launched node
# set; RSS and CPU per node every 10 s, deadline misses and every loss counter, as JSON.
soak: build install
	$(ROS) source $(PREFIX)/local_setup.bash && python scripts/soak.py --out soak.json

# Coverage-guided fuzzing of every ROS-free parser (cargo fuzz, nightly): FUZZ_SECONDS per
# target (default 60); `make fuzz FUZZ_SECONDS=600`. JSON line per target.
fuzz:
	bash scripts/fuzz.sh

# Prints how to get the same ROS environment in your shell.
env: setup
	@echo "source $(CURDIR)/scripts/ros-env.sh"

clean:
	cargo clean
	rm -rf .ros .cache
