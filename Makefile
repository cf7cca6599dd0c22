# The two commands of the README: `make demo` (set up, then run the main job) and `make test` (set up, then the tests).
.PHONY: setup demo test

setup:
	@./scripts/setup.sh

demo: setup
	.venv/bin/memloss demo

test: setup
	./scripts/test.sh
