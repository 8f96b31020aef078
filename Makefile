# conjuringd developer entry points. Run as root on Debian 12 (see README.md).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Debian's own python: the project runs on Debian's python3-* libraries.
SYSPY := /usr/bin/python3
export PATH := /usr/sbin:/usr/bin:/sbin:/bin:$(PATH)

.PHONY: deps venv test unit run clean

deps:
	bash .ci/install-deps.sh

$(VENV)/.stamp: tests/requirements.txt
	$(SYSPY) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r tests/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

venv: deps $(VENV)/.stamp

test: venv
	$(PY) -m pytest -ra $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -ra tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache .hypothesis

run: venv
	bash scripts/run-main-job.sh

# Appliance packaging (issue 6): dist/conjuringd_<version>_all.deb, lintian-clean.
.PHONY: deb system-test
deb: deps
	bash packaging/build-deb.sh --lintian

# The installed .deb in a container that boots systemd (needs root and dockerd).
system-test: venv
	$(PY) -m pytest -ra -m system tests/system $(PYTEST_ARGS)
