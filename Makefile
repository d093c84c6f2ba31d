all: native bpf

native:
	@bash scripts/build-native.sh

# The eBPF datapath objects (bpf/*.c -> build/bpf/*.o), with BTF.
BPF_CLANG ?= clang
BPF_CFLAGS := -O2 -g -target bpf -mcpu=v3 -Wall -Werror \
	-I/usr/include/$(shell $(BPF_CLANG) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
BPF_SOURCES := $(wildcard bpf/*.c)
BPF_HEADERS := $(wildcard bpf/lib/*.h)
BPF_OBJECTS := $(patsubst bpf/%.c,build/bpf/%.o,$(BPF_SOURCES))
# The differential test's pair: the same datapath with the fast path on and off,
# both on the test clock (a map the test sets) instead of the boot-time clock.
BPF_DIFF_OBJECTS := build/bpf/difftest/meshid-fastpath.o build/bpf/difftest/meshid-fullpath.o
# The benchmark's references: the datapath as the agent loads it, but with the fast path
# off, and with the fast path on conntrack alone (no flow cache).
BPF_BENCH_OBJECTS := build/bpf/bench/meshid-fullpath.o build/bpf/bench/meshid-nocache.o build/bpf/bench/empty.o

bpf: $(BPF_OBJECTS) $(BPF_DIFF_OBJECTS) $(BPF_BENCH_OBJECTS)

build/bpf/%.o: bpf/%.c $(BPF_HEADERS)
	@mkdir -p build/bpf
	$(BPF_CLANG) $(BPF_CFLAGS) -c $< -o $@

build/bpf/difftest/meshid-fastpath.o: bpf/meshid.c $(BPF_HEADERS)
	@mkdir -p build/bpf/difftest
	$(BPF_CLANG) $(BPF_CFLAGS) -DMESHID_TEST_BUILD -DMESHID_FASTPATH=1 -c $< -o $@

build/bpf/difftest/meshid-fullpath.o: bpf/meshid.c $(BPF_HEADERS)
	@mkdir -p build/bpf/difftest
	$(BPF_CLANG) $(BPF_CFLAGS) -DMESHID_TEST_BUILD -DMESHID_FASTPATH=0 -c $< -o $@

build/bpf/bench/meshid-fullpath.o: bpf/meshid.c $(BPF_HEADERS)
	@mkdir -p build/bpf/bench
	$(BPF_CLANG) $(BPF_CFLAGS) -DMESHID_FASTPATH=0 -c $< -o $@

build/bpf/bench/meshid-nocache.o: bpf/meshid.c $(BPF_HEADERS)
	@mkdir -p build/bpf/bench
	$(BPF_CLANG) $(BPF_CFLAGS) -DMESHID_FLOWCACHE=0 -c $< -o $@

build/bpf/bench/empty.o: bench/bpf/empty.c
	@mkdir -p build/bpf/bench
	$(BPF_CLANG) $(BPF_CFLAGS) -c $< -o $@

.PHONY: all native bpf
