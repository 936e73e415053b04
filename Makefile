# The two commands of the README. Each first runs the idempotent set-up (fast when
# everything is present), then does its job.
.PHONY: serve test setup-serve setup-test

# Build the browser app and serve it with the default model on http://127.0.0.1:8080
serve: setup-serve
	scripts/serve.sh

# The whole test suite (CI runs exactly this).
test: setup-test
	scripts/test.sh

setup-serve:
	scripts/setup.sh serve

setup-test:
	scripts/setup.sh test
