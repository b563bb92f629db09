# moat — build, run, test, bench.  See README.md.
#   make          release build: build/rel/moat
#   make run      install deps, build, run on the embedded default configuration
#   make test     install deps, ASan+UBSan build, unit tests, fuzzers, protocol tests
#   make bench    install deps, release build, print benchmark figures (SMTP, tables, engine,
#                 DNSBL, relay delivery and the queue manager)

CC      ?= gcc
FUZZCC  ?= clang
PKGS    := libevent libevent_pthreads libevent_openssl openssl libcrypt lmdb libpcre2-8 libhs libunbound hiredis libpsl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -levent_openssl -levent_pthreads -levent -lssl -lcrypto -lcrypt -llmdb -lpcre2-8 -lhs -lunbound -lhiredis -lpsl)
WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wformat=2 -Wvla
CSTD    := -std=c17 -D_GNU_SOURCE
INC     := -Isrc
LIBS    := $(PKG_LIBS) -lresolv -lpthread

REL_CFLAGS  := $(CSTD) $(WARN) $(INC) $(PKG_CFLAGS) -O2 -g -fno-strict-aliasing
ASAN_CFLAGS := $(CSTD) $(WARN) $(INC) $(PKG_CFLAGS) -O1 -g -fno-omit-frame-pointer \
               -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := $(CSTD) $(INC) $(PKG_CFLAGS) -O1 -g -fno-omit-frame-pointer \
               -fsanitize=fuzzer-no-link,address,undefined -DMOAT_FUZZING

LIB_SRC  := $(filter-out src/cli/main.c,$(wildcard src/*/*.c))
MAIN_SRC := src/cli/main.c
UNIT_SRC := $(wildcard tests/unit/*.c)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
BENCH_SRC := $(wildcard bench/*.c)
ENGINE_SRC := $(wildcard bench/engine/*.c)
HDRS     := $(wildcard src/*/*.h src/*/*.def tests/unit/*.h)

REL_OBJ  := $(LIB_SRC:%.c=build/rel/%.o)
ASAN_OBJ := $(LIB_SRC:%.c=build/asan/%.o)
FUZZ_OBJ := $(LIB_SRC:%.c=build/fuzz/%.o)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)

FUZZ_SECONDS ?= 10
PYTEST   ?= /usr/bin/python3 -m pytest

.PHONY: all run test unit fuzz proto bench bench-engine bench-queue deps deps-build clean
# Keep intermediate objects (fuzz objects are otherwise deleted between targets).
.SECONDARY:
all: build/rel/moat

deps-build:
	@scripts/deps.sh build
deps:
	@scripts/deps.sh test

# V=1 shows the full compiler command lines.
Q := $(if $(V),,@)
build/rel/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC      $<")
	$(Q)$(CC) $(REL_CFLAGS) -c $< -o $@
build/asan/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC asan $<")
	$(Q)$(CC) $(ASAN_CFLAGS) -c $< -o $@
build/fuzz/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC fuzz $<")
	$(Q)$(FUZZCC) $(FUZZ_CFLAGS) -c $< -o $@

build/rel/moat: $(REL_OBJ) build/rel/src/cli/main.o
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(REL_CFLAGS) -o $@ $^ $(LIBS)
build/asan/moat: $(ASAN_OBJ) build/asan/src/cli/main.o
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(LIBS)
build/asan/unit: $(ASAN_OBJ) $(UNIT_SRC:%.c=build/asan/%.o)
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(LIBS)
build/fuzz/fuzz_%: build/fuzz/tests/fuzz/fuzz_%.o $(FUZZ_OBJ)
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(FUZZCC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LIBS)
build/rel/moat-bench: $(BENCH_SRC) $(wildcard bench/*.h) $(HDRS)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC+LD   $@")
	$(Q)$(CC) $(REL_CFLAGS) -o $@ $(BENCH_SRC) $(LIBS)
# The table and restriction-engine benchmark links the release library itself.
build/rel/moat-bench-engine: $(ENGINE_SRC) $(wildcard bench/engine/*.h) $(REL_OBJ) $(HDRS)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC+LD   $@")
	$(Q)$(CC) $(REL_CFLAGS) -o $@ $(ENGINE_SRC) $(REL_OBJ) $(LIBS)

run: deps-build build/rel/moat
	./build/rel/moat serve

unit: build/asan/unit
	./build/asan/unit

fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do \
	    n=$$(basename $$f); mkdir -p build/fuzz/corpus/$$n; \
	    seed=tests/fuzz/seeds/$${n#fuzz_}; [ -d $$seed ] || seed=; \
	    echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 \
	        build/fuzz/corpus/$$n $$seed >build/fuzz/$$n.log 2>&1 \
	        || { tail -40 build/fuzz/$$n.log; echo "fuzz: $$n FAILED"; exit 1; }; \
	done; echo "fuzz: $(words $(FUZZ_BIN)) targets clean"

proto: build/asan/moat
	MOAT_BIN=$(CURDIR)/build/asan/moat $(PYTEST) -q -p no:cacheprovider tests/proto

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: deps
	$(MAKE) -j$(JOBS) build/asan/moat build/asan/unit $(FUZZ_BIN)
	$(MAKE) unit
	$(MAKE) fuzz
	$(MAKE) proto

bench: deps build/rel/moat build/rel/moat-bench build/rel/moat-bench-engine
	bench/run.sh
# Only the lookup-table and restriction-engine figures (about 15 s).
bench-engine: build/rel/moat-bench-engine
	build/rel/moat-bench-engine
# Only relay delivery and the queue manager (bench/queue.sh; 1-2 minutes).
bench-queue: deps build/rel/moat build/rel/moat-bench
	bench/queue.sh

clean:
	rm -rf build
