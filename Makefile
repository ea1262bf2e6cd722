# credd: build, run, test, install. `make run` and `make test` install what a fresh Debian 12 lacks first.
SHELL := /bin/bash
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(PREFIX)/bin
SYSTEMD_SYSTEM_DIR ?= /lib/systemd/system
SYSTEMD_USER_DIR ?= /usr/lib/systemd/user
SWIFT ?= $(shell command -v swift || echo /opt/swift/usr/bin/swift)
export TMPDIR := $(CURDIR)/.tmp

.PHONY: setup build release run test test-swift test-integration install clean

setup:
	@mkdir -p .tmp
	@bash .ci/setup

build: setup
	$(SWIFT) build

release: setup
	$(SWIFT) build -c release

# Build and run credd in the foreground with its default config (or $$CREDD_CONFIG / --config).
run: release
	./.build/release/credd serve $(ARGS)

# The whole test suite: Swift unit tests, then integration tests against real clients, all inside a
# network namespace that has only loopback, so nothing can reach 169.254.169.254 or the Internet.
test: setup
	$(SWIFT) build --build-tests
	unshare --net bash -c 'ip link set lo up && $(MAKE) --no-print-directory test-swift test-integration'

test-swift:
	$(SWIFT) test --skip-build

test-integration:
	.venv/bin/python -m pytest -c Tests/integration/pytest.ini Tests/integration $(PYTEST_ARGS)

install: release
	install -D -m 0755 .build/release/credd $(DESTDIR)$(BINDIR)/credd
	@echo "Clients: AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9702/v1/credentials AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/credd/token"

clean:
	rm -rf .build .tmp
