all:
	@true
.PHONY: all
