#!/usr/bin/env bash
# One-shot set-up on a fresh Debian/Ubuntu machine with Python 3.11 (run by `make demo` / `make test`):
#   1. system libraries (apt when root, else print the apt command and stop),
#   2. the virtual environment .venv,
#   3. ROS 2 Kilted from PyPI wheels + the project's Python dependencies,
#   4. the interface package cmr_fusion_msgs (built with scikit-build-core against those wheels),
#   5. the project itself (non-editable: installs share/cmr_fusion_ros and registers it in the ament index).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
EXTRAS=${EXTRAS:-cpu,ros,test,train}  # gpu instead of cpu: onnxruntime-gpu (CUDA execution providers)
start=$(date +%s)

# --- 1. system libraries --------------------------------------------------------------------------------------
missing=()
{ ldconfig -p 2>/dev/null || true; } | grep 'libusb-1.0.so.0' >/dev/null || missing+=(libusb-1.0-0)  # open3d
command -v g++ >/dev/null || missing+=(g++)                                          # interface package
command -v make >/dev/null || missing+=(make)
"$PYTHON" -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' \
  || missing+=(python3-dev)
"$PYTHON" -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: run:  sudo apt-get install -y ${missing[*]}   then run this command again" >&2
    exit 1
  fi
fi

# --- 2. virtual environment --------------------------------------------------------------------------------------
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$pyver" = "3.11" ] || echo "setup: warning: Python $pyver found; the ROS 2 Kilted wheels target CPython 3.11" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# Some machines' pip configuration names local package folders that may not exist: pip warns once per package.
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }
PIP=(quiet "$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

# --- 3.-5. Python packages ----------------------------------------------------------------------------------------
# torch comes from the CPU wheel (a plain `torch` would pull a multi-GB CUDA build).
"${PIP[@]}" install -q "torch==2.13.0"
if ! "$VENV/bin/python" -c 'import cmr_fusion_msgs.msg' 2>/dev/null \
   || [ cmr_fusion_msgs -nt "$VENV/.cmr_fusion_msgs.stamp" ] \
   || [ -n "$(find cmr_fusion_msgs -newer "$VENV/.cmr_fusion_msgs.stamp" -type f 2>/dev/null | head -1)" ]; then
  "${PIP[@]}" install -q ./cmr_fusion_msgs
  touch "$VENV/.cmr_fusion_msgs.stamp"
fi
# one onnxruntime build per venv (the CPU and the GPU packages install the same module): drop the other one
case ",${EXTRAS}," in *,gpu,*) other=onnxruntime ;; *) other=onnxruntime-gpu ;; esac
if "$VENV/bin/python" -m pip show -q "$other" >/dev/null 2>&1; then "${PIP[@]}" uninstall -y -q "$other"; fi
"${PIP[@]}" install -q ".[${EXTRAS}]"
rm -rf build  # setuptools' build folder from the non-editable install

echo "setup: done in $(( $(date +%s) - start )) s; venv $(du -sh "$VENV" | cut -f1)"
