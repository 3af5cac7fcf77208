#!/usr/bin/env bash
# GPU check: does this venv's onnxruntime run the encoders on CUDA, and how fast is offline processing with it?
#   1. onnxruntime lists CUDAExecutionProvider (a venv made with EXTRAS=gpu,ros,test,train scripts/setup.sh),
#   2. the shipped encoders start on it (not silently on the CPU: no CUDA libraries, no GPU),
#   3. `cmr-fusion bench offline` on BAG with encoders.providers [CUDAExecutionProvider, CPUExecutionProvider],
#      then the same on the CPU provider alone, reports in OUT.
# Usage: scripts/gpu_check.sh [BAG] [OUT]   (VENV=.venv by default). Exit 3: no CUDA provider in this onnxruntime;
# exit 4: the provider is there but the encoders did not start on it.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
BAG=${1:-bags/sample_town/session_00}
OUT=${2:-gpu_check_out}
PY="$VENV/bin/python"
mkdir -p "$OUT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}

# 1.-2. providers, and parameter files for both runs
"$PY" - "$OUT" <<'EOF'
import sys
import warnings
from pathlib import Path

import onnxruntime as ort

from cmr_fusion_ros.core.config import load_parameter_file, render_parameter_file
from cmr_fusion_ros.core.encoder import load_encoders, providers_in_use
from cmr_fusion_ros.paths import config_file, models_dir

out = Path(sys.argv[1])
available = ort.get_available_providers()
print(f"onnxruntime {ort.__version__} ({ort.get_device()}), providers {available}")
if "CUDAExecutionProvider" not in available:
    print("no CUDAExecutionProvider: install the GPU build (EXTRAS=gpu,ros,test,train scripts/setup.sh, "
          "or pip install '.[gpu]')", file=sys.stderr)
    sys.exit(3)
gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
with warnings.catch_warnings():
    warnings.simplefilter("error")  # a fallback to the CPU is a failure here
    try:
        encoders = load_encoders(models_dir(), providers=gpu, warmup_runs=1)
    except Warning as w:
        print(f"the encoders did not start on CUDA: {w}", file=sys.stderr)
        sys.exit(4)
print(f"encoders on {providers_in_use(encoders)}")
base = load_parameter_file(config_file("fusion.yaml"), "fusion_node")
for name, providers in (("gpu", gpu), ("cpu", ["CPUExecutionProvider"])):
    base["encoders"]["providers"] = providers
    (out / f"params_{name}.yaml").write_text(render_parameter_file({"fusion_node": base}, f"gpu_check: {providers}"))
EOF

# 3. offline processing and the encoders, GPU then CPU (same bag, same command)
for run in gpu cpu; do
  echo "== bench offline, $run providers"
  "$VENV/bin/cmr-fusion" bench offline "$BAG" --params "$OUT/params_$run.yaml" --repeats 2 --batch 1 8 \
    --json "$OUT/bench_offline_$run.json"
done
echo "gpu_check: reports in $OUT (bench_offline_gpu.md, bench_offline_cpu.md)"
