# ami-pipeline. `make test` runs every check; `make demo` runs one pipeline on the local AWS stack.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .tools/venv
PY := $(VENV)/bin/python
EVENT ?= infra/events/release.json

.PHONY: test lint unit tools stack-test infra-test e2e demo schema definition package bench deploy preflight

test: lint unit stack-test infra-test e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit:
	cargo test --workspace --locked

# Pinned emulators and tools into .tools/ (git-ignored); a no-op when already installed.
tools:
	bash scripts/install/stack.sh
	bash scripts/install/awscli.sh

stack-test: tools
	$(PY) -m pytest -q tests/stack

# Recipe examples against the schema; cfn-lint, checkov and IAM-vs-code tests on the SAM template.
infra-test: tools
	$(PY) tests/infra/check_recipes.py
	bash tests/infra/check.sh

# Lambda zips for every function (arm64; `make package ARCH=--x86_64` for x86_64) into dist/.
# Needs only Rust and what scripts/install/package.sh installs (cargo-lambda, zig): nothing of the emulator.
package:
	bash scripts/package.sh $(ARCH)

# Deploys the stack (infra/DEPLOY.md): checks for the SAM CLI first (package takes minutes), builds the zips, then
# `sam deploy`: guided the first time, which saves the answers to SAMCONFIG; later runs reuse them.
SAMCONFIG ?= infra/samconfig.toml
deploy:
	@command -v sam >/dev/null || { echo "make deploy: the AWS SAM CLI (sam) is not installed. Install it (e.g." \
	  "'pip install aws-sam-cli', or https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html)" \
	  "and configure AWS credentials; infra/DEPLOY.md lists what the stack needs." >&2; exit 1; }
	$(MAKE) package
	if [ -f "$(SAMCONFIG)" ]; then \
	  sam deploy --template-file infra/template.yaml --config-file "$(CURDIR)/$(SAMCONFIG)"; \
	else \
	  sam deploy --guided --template-file infra/template.yaml --capabilities CAPABILITY_IAM \
	    --config-file "$(CURDIR)/$(SAMCONFIG)"; \
	fi

# Checks a stored recipe against the deployed stack before a build (functions/trigger/src/preflight.rs): invokes
# the trigger with {"preflight": true, "pipeline": PIPELINE}, which checks every region the run touches and starts
# nothing. Exit 1 with the list of problems. STACK: the stack name (default ami-pipeline). Needs the AWS CLI, v1 or
# v2 (the payload is a file, `fileb://`, which both send as it is).
STACK ?= ami-pipeline
preflight:
	@[ -n "$(PIPELINE)" ] || { echo "usage: make preflight PIPELINE=<name> [STACK=ami-pipeline]" >&2; exit 2; }
	@command -v aws >/dev/null || { echo "make preflight: the AWS CLI (aws) is not installed" >&2; exit 1; }
	@fn=$$(aws cloudformation describe-stacks --stack-name "$(STACK)" --output text \
	  --query "Stacks[0].Outputs[?OutputKey=='TriggerFunctionArn'].OutputValue"); \
	out=$$(mktemp); payload=$$(mktemp); trap 'rm -f "$$out" "$$payload"' EXIT; \
	printf '{"preflight": true, "pipeline": "%s"}' "$(PIPELINE)" >"$$payload"; \
	aws lambda invoke --function-name "$$fn" --payload "fileb://$$payload" "$$out" >/dev/null; \
	cat "$$out"; echo; \
	if grep -q '"errorType"' "$$out"; then exit 1; fi

e2e: tools
	@if [ -f tests/local/e2e.sh ]; then bash tests/local/e2e.sh; else echo "e2e: not yet available"; fi

demo: tools
	bash tests/local/demo.sh $(EVENT)

# Regenerates infra/recipe.schema.json from the Rust recipe types.
schema:
	UPDATE_SCHEMA=1 cargo test -p ami-core --locked committed_schema_is_current

# Regenerates statemachine/pipeline.asl.json (functions/core/src/definition.rs) and infra/contract.json
# (functions/core/src/contract.rs), which the Python tests read.
definition:
	UPDATE_DEFINITION=1 cargo test -p ami-core --locked --lib committed_

# Benchmarks, not part of `make test`: cold start, memory, warm latency against a Python/boto3 baseline, arm64 zip
# sizes and build time (`make package` inside), cost per run, scale. Writes bench/results.json and BENCHMARKS.md.
# BENCH_ARGS: e.g. "--runs 5 --scale 20 --skip-package".
bench: tools
	bash scripts/install/bench.sh
	cargo build --release --bins --locked
	$(PY) bench/bench.py $(BENCH_ARGS)
