# Front door. `make run` and `make test` install what is missing, build, then run.
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
# The demo site in the foreground (examples/site.toml, state in examples/var): Ctrl-C stops it.
# PostgreSQL runs as the `postgres` user, so `make run` needs root (sudo make run).
SITE ?= examples/site.toml

.PHONY: all deps build run test test-fast test-asan fuzz bench clean format

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	@$(BUILD)/fulcrum up $(SITE)

# Every test: unit, fuzz-corpus replay and integration on the release build, then unit and
# fuzz replay again under ASan+UBSan.
test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory test-asan

test-fast: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE integration

test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFULCRUM_SANITIZE=ON -DFULCRUM_BENCH=OFF >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS) -LE chaos

# Coverage-guided fuzzing with libFuzzer (clang). FUZZ_SECONDS per target; the HTTP targets
# (all but config) get tests/fuzz/http.dict.
FUZZ_SECONDS ?= 60
fuzz: deps
	@CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFULCRUM_FUZZ=ON -DFULCRUM_BENCH=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@for t in $(FUZZ_BUILD)/tests/*_fuzz; do \
		c=tests/fuzz/corpus/$$(basename $$t _fuzz); mkdir -p $(FUZZ_BUILD)/corpus-$$(basename $$t); \
		d=; case $$t in *config_fuzz) ;; *) d=-dict=tests/fuzz/http.dict;; esac; \
		$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$d $(FUZZ_BUILD)/corpus-$$(basename $$t) $$c || exit 1; \
	done

bench: build
	@scripts/deps.sh --bench
	@bench/run-all.sh

format:
	@clang-format -i $$(git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'tests/*.h' 'bench/*.cpp')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
