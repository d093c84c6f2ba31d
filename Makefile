all: native bpf

native:
	@bash scripts/build-native.sh

# The eBPF datapath objects (bpf/*.c -> build/bpf/*.o), with BTF.
BPF_CLANG ?= clang
BPF_CFLAGS := -O2 -g -target bpf -mcpu=v3 -Wall -Werror \
	-I/usr/include/$(shell $(BPF_CLANG) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
BPF_SOURCES := $(wildcard bpf/*.c)
BPF_OBJECTS := $(patsubst bpf/%.c,build/bpf/%.o,$(BPF_SOURCES))

bpf: $(BPF_OBJECTS)

build/bpf/%.o: bpf/%.c $(wildcard bpf/lib/*.h)
	@mkdir -p build/bpf
	$(BPF_CLANG) $(BPF_CFLAGS) -c $< -o $@

.PHONY: all native bpf
