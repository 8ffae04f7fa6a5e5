# Kiln: `make demo` runs the main job, `make test` runs every test.
# Both install what they need (Debian packages, Go modules) when run as root.
SHELL := /bin/bash
GO ?= go
BIN := bin/kiln
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/kilnhq/kiln/internal/cli.Version=$(VERSION)

.PHONY: all build deps test vet fmt-check demo demo-inventory bench bench-store bench-get bench-image bench-dhcp bench-tftp bench-http bench-enroll fuzz mutate clean

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

# Every test, on SQLite and PostgreSQL (a throwaway local server is started when
# KILN_TEST_DATABASE_URL is not set). Short fuzz runs of every parser are included.
test: deps fmt-check vet build
	$(GO) test -count=1 -timeout 20m ./...
	./scripts/fuzz-smoke.sh 10s

# Boots a VM from Kiln end to end (root: network namespaces, taps, QEMU).
demo: deps build
	./scripts/demo.sh

# The inventory-only walk-through (no root, no VM): serve, apply, get, audit.
demo-inventory: build
	./scripts/demo-inventory.sh

# Benchmarks; figures and commands are recorded in BENCHMARKS.md.
bench: deps build bench-store bench-get bench-dhcp bench-tftp bench-http bench-enroll bench-image

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
