#!/usr/bin/env bash
# Sets up a fresh machine for digitcnn: Debian packages where apt-get works, then .venv with the package.
#   bash scripts/setup.sh          what `digitcnn train` needs (plus the web and ONNX extras)
#   bash scripts/setup.sh --dev    also the test tools, the benchmark's Keras, and Chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

debian_packages=()
[ -d /usr/share/datasets/fashion-mnist ] || debian_packages+=(dataset-fashion-mnist)
if [ "$dev" = 1 ] && ! command -v chromium >/dev/null; then debian_packages+=(chromium); fi
if [ "${#debian_packages[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${debian_packages[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debian_packages[@]}" >/dev/null
  else
    echo "setup: without root apt-get, skipping Debian packages: ${debian_packages[*]} (Fashion-MNIST and browser tests need them)" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
extras="web,export"
[ "$dev" = 1 ] && extras="web,export,bench,dev"
# torch is pinned in pyproject.toml: its CPU wheel is on our machines' disk; unpinned, pip pulls a CUDA build.
.venv/bin/python -m pip install --quiet --no-compile --disable-pip-version-check -e ".[$extras]"

# Bytecode for what this run installed (the folders and modules new since the last run): pip compiles one file at
# a time, compileall on every core (a fresh --dev setup: 62 + 40 s against 131 s on a 2-core EPYC). A file that
# does not compile (torch ships one in a newer Python's syntax) is left to the interpreter, as pip leaves it.
site_packages=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))")
stamp=.venv/.compiled
if [ -e "$stamp" ]; then
  mapfile -t installed < <(find "$site_packages" -mindepth 1 -maxdepth 1 -newer "$stamp")
else
  installed=("$site_packages")
fi
if [ "${#installed[@]}" -gt 0 ]; then
  .venv/bin/python -m compileall -q -j 0 "${installed[@]}" >/dev/null || true
fi
touch "$stamp"
