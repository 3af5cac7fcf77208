#!/usr/bin/env bash
# The repository as a ROS 2 user builds it, checked on a machine with no ROS install:
#   1. an underlay in a fresh venv: colcon (colcon-common-extensions) and ROS 2 Kilted from the PyPI wheels (the
#      ament/rosidl build tools, rclpy, the message packages), plus the Python libraries the nodes import (what
#      `rosdep install` brings on a ROS machine);
#   2. a workspace ws/src/cmr_fusion_ros made from `git archive HEAD` (committed files only);
#   3. plain `colcon list` and `colcon build` in ws/ (no --packages-select, no --base-paths);
#   4. `source install/setup.bash`, then importing the messages from install/;
#   5. fusion_node started from install/ with a parameter file for a few seconds: its matches topic must be seen,
#      with the type cmr_fusion_msgs/msg/MatchEventArray, from another process; SIGINT must stop it with exit code 0.
# The last line says what was built and started. Exit code 0 = all of it worked.
#
#   scripts/workspace_check.sh [WORKDIR]      (default: a new folder under ${TMPDIR:-/tmp}; kept afterwards)
# Environment: PYTHON (default python3.11), RUN_S (seconds fusion_node runs, default 5), ROS_DOMAIN_ID (default 0).
# pip's cache makes a second run fast; the first one downloads about 400 MB of wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
# A clean start: nothing from an outer venv or ROS setup (the ROS wheels' bootstrap re-executes python with its own
# LD_LIBRARY_PATH and marks that in _ROS_WHEELS_BOOTSTRAP_COMPLETE; inherited, the underlay would load other libraries).
if [ -n "${VIRTUAL_ENV:-}" ]; then PATH=$(echo "$PATH" | tr : '\n' | grep -vx "$VIRTUAL_ENV/bin" | paste -sd: -); fi
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE LD_LIBRARY_PATH PYTHONPATH PYTHONHOME VIRTUAL_ENV AMENT_PREFIX_PATH \
  CMAKE_PREFIX_PATH COLCON_PREFIX_PATH ROS_DISTRO ROS_VERSION ROS_PYTHON_VERSION
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
RUN_S=${RUN_S:-5}
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/cmr_workspace_check.XXXXXX")}
WORK=$(mkdir -p "$WORK" && cd "$WORK" && pwd)
VENV=$WORK/underlay
WS=$WORK/ws
start=$(date +%s)
say() { echo "workspace_check: $*"; }
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }

# --- 1. underlay ---------------------------------------------------------------------------------------------------
say "underlay venv $VENV"
rm -rf "$VENV" "$WS"
"$PYTHON" -m venv "$VENV"
# The ROS wheels the interface package builds with (cmr_fusion_msgs/pyproject.toml), the ones the nodes import and
# the Python libraries (setup.py: install_requires, the "cpu" extra (onnxruntime) and the "ros" extra), read from the
# files, not repeated here.
mapfile -t deps < <("$VENV/bin/python" - "$REPO" <<'EOF'
import runpy, sys, tomllib
from pathlib import Path

import setuptools

repo = Path(sys.argv[1])
seen = {}
setuptools.setup = lambda **kw: seen.update(kw)  # read setup()'s arguments without building anything
runpy.run_path(str(repo / "setup.py"), run_name="__main__")
msgs = tomllib.loads((repo / "cmr_fusion_msgs" / "pyproject.toml").read_text())
deps = [d for d in msgs["build-system"]["requires"] if not d.startswith("scikit-build")]
deps += msgs["project"]["dependencies"] + seen["install_requires"] + seen["extras_require"]["cpu"] + seen["extras_require"]["ros"]
print("\n".join(dict.fromkeys(deps)))
EOF
)
PIP=(quiet "$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
command -v cmake >/dev/null || deps+=(cmake)  # colcon's CMake build needs cmake >= 3.16 (the wheel when none)
"${PIP[@]}" install -q colcon-common-extensions "${deps[@]}"
say "underlay: colcon-core $("$VENV/bin/python" -c 'import colcon_core; print(colcon_core.__version__)'), rclpy $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("ros-rclpy"))'), ${#deps[@]} packages named by setup.py and cmr_fusion_msgs/pyproject.toml"

# --- 2. workspace ----------------------------------------------------------------------------------------------------
mkdir -p "$WS/src/cmr_fusion_ros"
git -C "$REPO" archive HEAD | tar -x -C "$WS/src/cmr_fusion_ros"
say "workspace $WS from git archive HEAD ($(git -C "$REPO" rev-parse --short HEAD))"

# --- 3. plain colcon -------------------------------------------------------------------------------------------------
# The underlay, as `source /opt/ros/kilted/setup.bash` gives it on a ROS machine: the venv is the ROS prefix.
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
cd "$WS"
colcon list | tee "$WORK/colcon_list.txt"
build_start=$(date +%s)
if ! colcon build > "$WORK/colcon_build.txt" 2>&1; then
  tail -n 60 "$WORK/colcon_build.txt"; say "FAILED: colcon build (log: $WS/log/latest_build)"; exit 1
fi
grep -v "doesn't contain any 'local_setup" "$WORK/colcon_build.txt" || true  # the venv underlay has no setup files
build_s=$(( $(date +%s) - build_start ))
packages=$(cut -f1 "$WORK/colcon_list.txt" | paste -sd, -)

# --- 4. the installed workspace --------------------------------------------------------------------------------------
set +u  # colcon's setup scripts read unset variables
# shellcheck disable=SC1091
source install/setup.bash
set -u
cd "$WORK"  # nothing from the source tree on the path
python - <<'EOF'
import cmr_fusion_msgs.msg as msg, cmr_fusion_msgs.srv as srv, cmr_fusion_ros
from ament_index_python.packages import get_package_share_directory

for mod in (msg, cmr_fusion_ros):
    assert "/install/" in mod.__file__, mod.__file__
share = get_package_share_directory("cmr_fusion_ros")
assert "/install/" in share and __import__("os").path.isfile(share + "/config/fusion.yaml"), share
ev = msg.MatchEvent(query_topic="q", score=0.5)
print("workspace_check: imported", ", ".join(t.__name__ for t in (msg.MatchEvent, msg.MatchEventArray, msg.Embedding,
      srv.SaveMemory, srv.ClearMemory, srv.QueryMemory)), "from", msg.__file__.rsplit("/install/", 1)[1])
EOF

# --- 5. fusion_node from install/ ------------------------------------------------------------------------------------
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-0}
node=$WS/install/cmr_fusion_ros/lib/cmr_fusion_ros/fusion_node
cat > "$WORK/params.yaml" <<EOF
fusion_node:
  ros__parameters:
    memory:
      persistence:
        directory: "$WORK/memory"
EOF
"$node" --ros-args --params-file "$WORK/params.yaml" > "$WORK/fusion_node.log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true' EXIT
python - "$RUN_S" <<'EOF'
import sys, time

import rclpy

rclpy.init()
node = rclpy.create_node("workspace_check_probe")
want = ("/fusion_node/matches", ["cmr_fusion_msgs/msg/MatchEventArray"])
deadline = time.monotonic() + 60.0
while want not in node.get_topic_names_and_types():
    if time.monotonic() > deadline:
        sys.exit(f"workspace_check: FAILED: no {want[0]} of type {want[1][0]} within 60 s")
    rclpy.spin_once(node, timeout_sec=0.2)
seen = time.monotonic()
time.sleep(float(sys.argv[1]))
print(f"workspace_check: {want[0]} ({want[1][0]}) seen from another process; node up {sys.argv[1]} s more")
node.destroy_node()
rclpy.shutdown()
EOF
kill -0 $pid 2>/dev/null || { cat "$WORK/fusion_node.log"; say "FAILED: fusion_node exited early"; exit 1; }
kill -INT $pid
rc=0
wait $pid || rc=$?
trap - EXIT
cat "$WORK/fusion_node.log"
[ "$rc" = 0 ] || { say "FAILED: fusion_node exit code $rc after SIGINT"; exit 1; }
grep -q "^stopped:" "$WORK/fusion_node.log" || { say "FAILED: fusion_node did not stop cleanly"; exit 1; }

say "OK: plain colcon build of $packages (with the interface package cmr_fusion_msgs) in ${build_s} s; started install/cmr_fusion_ros/lib/cmr_fusion_ros/fusion_node with a parameter file, its matches topic seen, SIGINT exit 0; total $(( $(date +%s) - start )) s"
