all: native

native:
	@bash scripts/build-native.sh

.PHONY: all native
