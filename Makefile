# metalctl: `make demo` and `make test` do everything on a fresh Debian machine (as root).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DEMO ?= demo
PYTHON ?= python3
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup host libvirt venv lint test test-unit test-e2e wheel demo demo-down demo-vms demo-vms-down vagrant-demo vagrant-down bench clean

help:
	@echo "make demo       set up the host, build a 4-node lab, deploy a swarm, show docker node ls"
	@echo "make test       lint + type checks + unit, integration and e2e tests"
	@echo "make demo-down  remove the demo lab"
	@echo "make demo-vms   2 blank QEMU VMs (BIOS + UEFI): PXE discovery, Debian 12 written to disk, ready"
	@echo "make demo-vms-down  remove the VM lab"
	@echo "make vagrant-demo   the Vagrant test drive: vagrant up METALCTL_NODES (3) blank VMs -> swarm"
	@echo "make vagrant-down   remove it (vagrant destroy, boot service, bridge)"
	@echo "make bench      run the benchmarks in bench/ (prints figures)"
	@echo "make wheel      build dist/metalctl-*.whl (roles and workloads inside)"

setup: host venv libvirt

host:
	bash scripts/setup-host.sh

# The Vagrant test drive's host side: vagrant, vagrant-libvirt, libvirtd, the storage pool.
libvirt: venv
	PY=$(PY) bash scripts/setup-libvirt.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

lint: venv
	$(BIN)/ruff check metalctl tests bench setup.py
	$(BIN)/ruff format --check metalctl tests bench setup.py
	$(BIN)/mypy
	$(BIN)/yamllint -s roles workloads inventories
	$(BIN)/ansible-lint roles workloads/swarm/playbook.yml

test-unit: venv
	$(BIN)/pytest -q tests/unit tests/integration

# Every test under tests/e2e must carry the e2e marker (pytestmark = pytest.mark.e2e):
# -m e2e would otherwise skip it without a word, so an unmarked one fails the target.
test-e2e: setup
	@unmarked="$$($(BIN)/pytest -q --collect-only -m 'not e2e' tests/e2e | grep '::' || true)"; \
	if [ -n "$$unmarked" ]; then echo "e2e tests without the e2e marker:"; echo "$$unmarked"; exit 1; fi
	$(BIN)/pytest -q -m e2e tests/e2e

test: setup lint
	$(BIN)/pytest -q -rs tests

DEMO_VMS ?= demo-vms

demo-vms: setup
	$(BIN)/metalctl lab up --name $(DEMO_VMS) --vms 2 --uefi 1
	$(BIN)/metalctl provision --cluster $(DEMO_VMS)
	$(BIN)/metalctl machines list
	$(BIN)/metalctl deploy swarm --cluster $(DEMO_VMS)
	eval "$$($(BIN)/metalctl swarm env --cluster $(DEMO_VMS))" && docker node ls
	@echo
	@echo 'Your turn:  eval "$$(.venv/bin/metalctl swarm env --cluster $(DEMO_VMS))"; docker node ls'
	@echo 'Clean up:   make demo-vms-down'

demo-vms-down: venv
	$(BIN)/metalctl lab down --name $(DEMO_VMS)

# The Vagrant test drive (docs/test-drive.md): Vagrant makes the blank VMs (libvirt).
METALCTL_NODES ?= 3
VAGRANT_LAB ?= vagrant

vagrant-demo: setup
	$(BIN)/metalctl lab up --name $(VAGRANT_LAB) --vms $(METALCTL_NODES) --uefi 1 --vagrant
	$(BIN)/metalctl provision --cluster $(VAGRANT_LAB)
	$(BIN)/metalctl deploy swarm --cluster $(VAGRANT_LAB)
	eval "$$($(BIN)/metalctl swarm env --cluster $(VAGRANT_LAB))" && docker node ls
	@echo
	@echo 'Your turn:  eval "$$(.venv/bin/metalctl swarm env --cluster $(VAGRANT_LAB))"; docker node ls'
	@echo 'Vagrant:    eval "$$(.venv/bin/metalctl lab vagrant-env --name $(VAGRANT_LAB))"; vagrant status'
	@echo 'Clean up:   make vagrant-down'

vagrant-down: venv
	$(BIN)/metalctl lab down --name $(VAGRANT_LAB)

demo: setup
	$(BIN)/metalctl lab up --name $(DEMO) --nodes 4 --managers 3
	$(BIN)/metalctl deploy swarm --cluster $(DEMO)
	$(BIN)/metalctl swarm env --cluster $(DEMO)
	eval "$$($(BIN)/metalctl swarm env --cluster $(DEMO))" && docker node ls
	@echo
	@echo 'Your turn:  eval "$$(.venv/bin/metalctl swarm env --cluster $(DEMO))"; docker node ls'
	@echo 'Clean up:   make demo-down'

demo-down: venv
	$(BIN)/metalctl lab down --name $(DEMO)

bench: setup
	$(PY) bench/run_all.py

# A wheel that installs anywhere (pipx install . does the same): setup.py copies roles/ and
# workloads/ into it as metalctl/share/.
wheel: venv
	$(PY) -m pip wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
