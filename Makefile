# Claire de Binare: `make demo` runs the stack, `make test` runs the tests.
# Both set themselves up first (scripts/setup.sh, idempotent).
SHELL := /bin/bash
UV := .tools/bin/uv
RUN := UV_PYTHON_DOWNLOADS=never $(UV) run --frozen --no-sync
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: setup test lint typecheck unit demo bench schemas manifests clean

setup:
	@bash scripts/setup.sh

test: setup lint typecheck unit

lint:
	$(RUN) ruff check services operator tests bench
	$(RUN) ruff format --check services operator tests bench
	$(RUN) lint-imports

typecheck:
	$(RUN) mypy services operator

unit:
	$(RUN) pytest $(PYTEST_ARGS)

demo: setup
	$(RUN) cdb demo $(DEMO_ARGS)

bench: setup
	$(RUN) python -m bench $(BENCH_ARGS)

schemas: setup
	$(RUN) cdb schemas

clean:
	rm -rf .cdb bench/results/*.json .pytest_cache .mypy_cache .ruff_cache

# --- Kubernetes: the chart rendered, the image, the kind end-to-end run ---------------
.PHONY: image kind-e2e cluster
IMAGE ?= claire-de-binare
IMAGE_TAG ?= 0.1.0

manifests: setup
	bash scripts/render-manifests.sh manifests

image:
	docker build -t $(IMAGE):$(IMAGE_TAG) -t $(IMAGE):latest-local .

kind-e2e: setup
	IMAGE=$(IMAGE) bash scripts/kind-e2e.sh

# A real control plane on loopback (etcd, kube-apiserver, controllers, scheduler, a kwok
# node) from .tools/bin; prints the KUBECONFIG for kubectl, helm and the operator.
cluster: setup
	$(RUN) python -m tests.support.cluster
