# Kiln: `make demo` runs the main job, `make test` runs every test, `make check` is
# the fast contributor loop.
# Both install what they need (Debian packages, Go modules) when run as root.
SHELL := /bin/bash
GO ?= go
BIN := bin/kiln
# The release version scheme (internal/release.Describe): the newest v-tag, else v0.0.0-<commit>.
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --abbrev=12 --dirty 2>/dev/null || echo v0.0.0-$$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev))
LDFLAGS := -X github.com/kilnhq/kiln/internal/cli.Version=$(VERSION)

.PHONY: all build deps check test vet fmt-check demo demo-inventory bench bench-store bench-get bench-image bench-dhcp bench-tftp bench-http bench-enroll bench-flood bench-watch fuzz mutate clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kiln

deps:
	./scripts/install-deps.sh
	$(GO) mod download
	./scripts/e2e-assets.sh >/dev/null

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# The fast loop: gofmt, go vet and the tests that need no root, no tool to install
# and no VM (go test -short; internal/testkit skips the others). Installs nothing.
# TESTFLAGS=-count=1 runs the tests again instead of reusing cached results.
check: fmt-check vet
	$(GO) test -short $(TESTFLAGS) ./...

# Every test, on SQLite and PostgreSQL (a throwaway local server is started when
# KILN_TEST_DATABASE_URL is not set). Short fuzz runs of every parser are included.
test: deps fmt-check vet build
	$(GO) test -count=1 -timeout 45m ./...
	./scripts/fuzz-smoke.sh 10s

# Boots a VM from Kiln end to end (root: network namespaces, taps, QEMU).
demo: deps build
	./scripts/demo.sh

# The inventory-only walk-through (no root, no VM): serve, apply, get, audit.
demo-inventory: build
	./scripts/demo-inventory.sh

# Benchmarks; figures and commands are recorded in BENCHMARKS.md.
bench: deps build bench-store bench-get bench-dhcp bench-tftp bench-http bench-enroll bench-image bench-watch

bench-store:
	$(GO) test -run '^$$' -bench LookupMAC -benchtime 20000x ./internal/store/sqlite ./internal/store/postgres
	$(GO) test -run '^$$' -bench ListMachines -benchtime 10x ./internal/store/sqlite ./internal/store/postgres

bench-get:
	./scripts/bench-get-machines.sh 100000

# Network boot against its peers, in the same run (root: network namespaces; installs
# kea, dnsmasq, tftpd-hpa, nginx, wrk, atftp when missing): DHCP leases/s against Kea
# and dnsmasq (perfdhcp) plus kill -9 durability, TFTP seconds per 1 MiB against
# tftpd-hpa, iPXE scripts/s at 100 and 100,000 machines against nginx.
bench-dhcp: build
	./scripts/bench-dhcp.sh

bench-tftp: build
	./scripts/bench-tftp.sh

bench-http: build
	./scripts/bench-http.sh

# Enrollment: server-side throughput, and N concurrent agents over real HTTPS (key,
# CSR, enroll, one mTLS call) on SQLite and PostgreSQL.
# Simulated agents against a real kiln serve, on SQLite and on PostgreSQL, then the
# in-process benchmarks (the server side alone; the enrollment service in a child process).
bench-enroll: build
	./scripts/bench-enroll.sh
	$(GO) test -run '^$$' -bench 'Enroll$$|IssueClient' -benchtime 10000x -timeout 30m ./internal/enroll

# A flood from one address against a real kiln serve on loopback: database growth
# per 10,000 requests to /ipxe, /enroll and /phone-home, and legitimate clients'
# scripts/s and enrollments/s with and without a flood of /ipxe, /enroll and TFTP
# (about a minute and a half).
# 1,000 SSE clients on one kiln serve: memory per watcher and write-to-client latency.
bench-watch: build
	$(GO) test -run '^$$' -bench Watchers1000 -benchtime 1x -timeout 10m ./internal/cli

bench-flood:
	./scripts/bench-flood.sh

# image2disk writing 1 GiB to a loop device, against curl | dd and curl | zstd -d | dd.
bench-image: build
	./scripts/bench-image2disk.sh

fuzz:
	./scripts/fuzz-smoke.sh 60s

# Mutation testing (gremlins, pinned in the script) of the security- and
# data-critical packages; slow, so not part of `make test`. Scores: TESTING.md.
# One package: make mutate MUTATE_PKGS=audit
MUTATE_PKGS ?=
mutate:
	./scripts/mutate.sh $(MUTATE_PKGS)

clean:
	rm -rf bin

# Licences of the modules linked into kiln: fails on GPL, LGPL, AGPL or an unknown
# licence and writes THIRD_PARTY_NOTICES (commit it: `make test` fails while it is
# stale, in internal/thirdparty's TestNoticesFileIsCurrent).
# The Debian package dist/kiln_<version>_<arch>.deb (deploy/debian/build-deb.sh:
# dpkg-deb from a staged tree): binary, systemd unit, kiln user, /etc/kiln/kiln.yaml,
# man pages, completions. internal/packaging's test installs it into a scratch root.
.PHONY: deb
deb: build
	./deploy/debian/build-deb.sh $(BIN) $(VERSION) dist

# Kiln's container image as an OCI layout in dist/oci (tools/ociimage: no container
# daemon, byte-identical rebuilds: every time is the commit's). Push it with
# skopeo copy oci:dist/oci:$(VERSION) docker://REGISTRY/kiln:$(VERSION).
# internal/ociimage's tests check it with skopeo, umoci and a chroot.
.PHONY: image
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/kiln-static ./cmd/kiln
	rm -rf dist/oci
	$(GO) run ./tools/ociimage -binary bin/kiln-static -o dist/oci -version $(VERSION) \
		-revision $$(git rev-parse HEAD 2>/dev/null) -created $$(git log -1 --format=%ct 2>/dev/null || echo 0) \
		$$(test -f /etc/ssl/certs/ca-certificates.crt && echo -ca-bundle /etc/ssl/certs/ca-certificates.crt)

# The Helm chart: helm lint and helm template with several values sets, manifests
# checked (internal/packaging TestHelmChart); helm v4.3.2 is built into .cache/bin
# from the Go module proxy by install-deps (once).
.PHONY: helm-check
helm-check:
	./scripts/install-deps.sh
	$(GO) test -count=1 -run TestHelmChart ./internal/packaging

.PHONY: licenses release
licenses:
	$(GO) run ./tools/licenses

# Release artefacts in dist/: static kiln binaries for linux/amd64 and linux/arm64
# that are byte-identical when rebuilt from the same commit, SHA256SUMS and an SPDX
# 2.3 SBOM. The version is `git describe --tags` (v0.0.0-<commit> before the first
# tag). `make test` runs the same in internal/release's TestReleaseIsReproducibleAndVerifiable.
release:
	rm -rf dist
	$(GO) run ./tools/release -o dist
