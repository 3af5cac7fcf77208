#!/bin/sh
# Reproduce the evaluation and benchmark figures of issue 7 (not a test: minutes of CPU, figures depend on the load).
# usage: tests/bench_reproduce.sh OUT [MODELS]   (MODELS default: the installed models)
# Writes OUT/{bench_pipeline,bench_offline,eval_events}.{json,md,png} and the processed town in OUT/town11.
set -eu
OUT=${1:?usage: tests/bench_reproduce.sh OUT [MODELS]}
MODELS=${2:-}
M=${MODELS:+--models $MODELS}
CLI="python -m cmr_fusion_ros.cli"
mkdir -p "$OUT"
uptime
# 1. live latency against the DDS floor (25 s per phase)
$CLI bench pipeline $M --duration 25 --warmup 3 --json "$OUT/bench_pipeline.json" --plot "$OUT/bench_pipeline.png"
# 2. offline real-time factor and encoder wrapper vs bare onnxruntime, on the sample bag
$CLI bench offline bags/sample_town/session_00 $M --repeats 2 --iterations 300 --batch 1 8 \
    --json "$OUT/bench_offline.json" --plot "$OUT/bench_offline.png"
# 3. event precision/recall on a generated two-session town the models never saw
SIM="$OUT/town11"
[ -d "$SIM/session_01" ] || $CLI simulate --out "$SIM" --seed 11 --duration 120 --sessions 2 --no-progress
python - "$OUT/eval_params.yaml" <<'PY'
import sys
from cmr_fusion_ros.core.config import load_parameter_file, render_parameter_file
from cmr_fusion_ros.paths import config_file
p = load_parameter_file(config_file("fusion.yaml"), "fusion_node")
p["policy"]["min_score"] = 0.2
p["policy"]["min_probability"] = 0.0
open(sys.argv[1], "w").write(render_parameter_file({"fusion_node": p},
                             "fusion.yaml with policy.min_score 0.2, min_probability 0 (PR sweep)"))
PY
rm -rf "$OUT/proc" && mkdir -p "$OUT/proc"
for s in 00 01; do
  $CLI process "$SIM/session_$s" --out "$OUT/proc/s$s" --memory "$OUT/proc/memory" $M --params "$OUT/eval_params.yaml" \
      --no-progress
done
$CLI eval-events "$OUT/proc/s00/events.jsonl" "$OUT/proc/s01/events.jsonl" --truth "$SIM/session_00" "$SIM/session_01" \
    --plot "$OUT/eval_events.png" --json "$OUT/eval_events.json"
$CLI eval-events "$OUT/proc/s00/events.jsonl" "$OUT/proc/s01/events.jsonl" --truth "$SIM/session_00" "$SIM/session_01" \
    --max-window 0 --json "$OUT/eval_events_whole_runs.json"
uptime
