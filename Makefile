# credd: build, run, test, install. `make run` and `make test` install what a fresh Debian 12 lacks first.
SHELL := /bin/bash
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(PREFIX)/bin
SYSTEMD_SYSTEM_DIR ?= /lib/systemd/system
SYSTEMD_USER_DIR ?= /usr/lib/systemd/user
SWIFT ?= $(shell command -v swift || echo /opt/swift/usr/bin/swift)
export TMPDIR := $(CURDIR)/.tmp
# Release builds drop Swift's run-time exclusivity checks (swift_beginAccess on every access to a class's
# stored property, in SwiftNIO's per-request path above all): about a fifth of credd's user-space
# instructions per request (bench/README.md). Debug builds, which the tests run, keep them.
# Each function in its own section, so that the link can lay out the ones a serving credd runs together
# (bench/credd.order; Package.swift). bench/run.sh builds with the same flags.
SWIFT_RELEASE_FLAGS ?= -c release -Xswiftc -enforce-exclusivity=unchecked \
	-Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections

.PHONY: setup build release run test test-swift test-integration install clean

setup:
	@mkdir -p .tmp
	@bash .ci/setup

build: setup
	$(SWIFT) build

release: setup
	$(SWIFT) build $(SWIFT_RELEASE_FLAGS)

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

SYSUSERS_DIR ?= /usr/lib/sysusers.d
MANDIR ?= $(PREFIX)/share/man
BASH_COMPLETION_DIR ?= $(PREFIX)/share/bash-completion/completions
ZSH_COMPLETION_DIR ?= $(PREFIX)/share/zsh/site-functions
FISH_COMPLETION_DIR ?= $(PREFIX)/share/fish/vendor_completions.d
DOCDIR ?= $(PREFIX)/share/doc/credd
UNIT_SED := sed 's|@BINDIR@|$(BINDIR)|g'

# Installs the binary, the system and user units, the sysusers entry and the docs (PREFIX, DESTDIR honoured).
install: release
	install -D -m 0755 .build/release/credd $(DESTDIR)$(BINDIR)/credd
	for u in credd.socket credd-tcp.socket credd.service; do \
	  install -d $(DESTDIR)$(SYSTEMD_SYSTEM_DIR) && $(UNIT_SED) systemd/$$u > $(DESTDIR)$(SYSTEMD_SYSTEM_DIR)/$$u && chmod 0644 $(DESTDIR)$(SYSTEMD_SYSTEM_DIR)/$$u; \
	  install -d $(DESTDIR)$(SYSTEMD_USER_DIR) && $(UNIT_SED) systemd/user/$$u > $(DESTDIR)$(SYSTEMD_USER_DIR)/$$u && chmod 0644 $(DESTDIR)$(SYSTEMD_USER_DIR)/$$u; \
	done
	install -D -m 0644 systemd/credd.sysusers $(DESTDIR)$(SYSUSERS_DIR)/credd.conf
	install -D -m 0644 systemd/drop-ins/credd-egress.conf $(DESTDIR)$(DOCDIR)/credd-egress.conf
	install -D -m 0644 config/credd.yaml $(DESTDIR)$(DOCDIR)/credd.yaml.example
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	# The man page is generated from the command-line definitions by argument-parser's generate-manual.
	$(SWIFT) build $(SWIFT_RELEASE_FLAGS) --product generate-manual
	mkdir -p .build/man
	.build/release/generate-manual .build/release/credd --output-directory .build/man
	install -D -m 0644 .build/man/credd.1 $(DESTDIR)$(MANDIR)/man1/credd.1
	install -d $(DESTDIR)$(BASH_COMPLETION_DIR) $(DESTDIR)$(ZSH_COMPLETION_DIR) $(DESTDIR)$(FISH_COMPLETION_DIR)
	.build/release/credd completions bash > $(DESTDIR)$(BASH_COMPLETION_DIR)/credd
	.build/release/credd completions zsh > $(DESTDIR)$(ZSH_COMPLETION_DIR)/_credd
	.build/release/credd completions fish > $(DESTDIR)$(FISH_COMPLETION_DIR)/credd.fish
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemd-sysusers && systemctl daemon-reload; fi
	@echo "Installed. Start: systemctl enable --now credd.socket   (users: systemctl --user enable --now credd.socket)"
	@echo "Clients (system): AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9702/v1/credentials AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/credd/token"
	@echo "Clients (user):   AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9703/v1/credentials AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=\$$XDG_RUNTIME_DIR/credd/token"

clean:
	rm -rf .build .tmp
