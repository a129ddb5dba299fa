#!/usr/bin/env bash
# The one prepared GPU check of issue #21: the gpu-marked tests, then the benchmarks of the shipped config
# (config/advertisegen_glm4.yaml) on a random GLM-4-9B-chat, writing $OUT/gpu_table.md and one log per step.
#
#   tools/device_check.sh            on the lent GPU machine (about 8 minutes; every step has its own timeout)
#   tools/device_check.sh --tiny     anywhere (CPU): the same steps on a tiny model and synthetic data
#
# GPU mode needs, inside the repository (../shared is not carried to the device):
#   .whl/*.whl   wheels the device image lacks (transformers 5.23.0, peft 0.21.2, datasets 5.2.0, dill,
#                multiprocess, liger-kernel 0.8.5, bitsandbytes 0.50.2: 57 MiB), installed with --no-deps into /tmp/site
#   ${GLMTUNE_DEVDATA:-.devdata}/ (git-ignored), copied from ../shared/data:
#       glm-4-9b-chat/{config.json,tokenizer.model,tokenizer_config.json}   (tokenizers/glm-4-9b-chat)
#       AdvertiseGen/train.json   (AdvertiseGen/train.json; its first 2,500 lines are enough and keep the carried
#                                  tree under the device's 64 MiB with the wheels)
#       AdvertiseGen_fix_dev.json                                           (chatglm3/AdvertiseGen_fix_dev.json)
# The machine needs no jieba / rouge / nltk / snakemake: only predictions are generated, nothing is scored.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/.device-out}
mkdir -p "$OUT"
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
DEV=${GLMTUNE_DEVDATA:-.devdata}
TABLE="$OUT/gpu_table.md"
START=$(date +%s)

if [ "$TINY" = 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        > "$OUT/pip.log" 2>&1 || echo "pip install failed (see pip.log)" >&2
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

if [ "$TINY" = 1 ]; then  # a tiny model of the real architecture, synthetic AdvertiseGen rows
    DEV="$OUT/tiny-devdata"
    python3 - "$DEV" > "$OUT/tiny-setup.log" 2>&1 <<'PY'
import json, sys
from pathlib import Path
import yaml
from glmtune.data.synthetic import write_advertisegen
from glmtune.model.tiny import build_tiny_model
from glmtune.settings import TinySettings
from glmtune.bench.stage import SCHEMA, _defaults

root = Path(sys.argv[1])
raw = write_advertisegen(root / "AdvertiseGen", 300, 40, 0)
tiny_schema = yaml.safe_load(SCHEMA.read_text())["properties"]["model"]["properties"]["tiny"]
settings = TinySettings.from_config(_defaults(tiny_schema, {"hidden_size": 64, "intermediate_size": 128}))
conversations = root / "conversations.jsonl"
with open(conversations, "w", encoding="utf-8") as out, open(raw["dev"], encoding="utf-8") as dev:
    for line in dev:
        row = json.loads(line)
        out.write(json.dumps({"conversations": [{"role": "user", "content": row["content"]},
                                                {"role": "assistant", "content": row["summary"]}]}, ensure_ascii=False) + "\n")
build_tiny_model([conversations], root / "glm-4-9b-chat", settings, "glm4")
(root / "AdvertiseGen_fix_dev.json").write_text(conversations.read_text(encoding="utf-8"), encoding="utf-8")
PY
    STEPS=4; LOGSTEPS=1; LONG=256; SAMPLES=40; DEMO_SAMPLES=8
    T_TEST=600; T_TRAIN=600; T_LONG=600; T_KERNELS=600; T_EVAL=300
    KERNELS=config-plain-loss,config  # Liger's kernels are Triton (GPU only)
    LONGS=long
    python3 -c "import bitsandbytes" 2>/dev/null && LONGS=long,long-qlora  # 4-bit layers also run on a CPU
else
    STEPS=30; LOGSTEPS=5; LONG=2048; SAMPLES=1070; DEMO_SAMPLES=48
    T_TEST=150; T_TRAIN=140; T_LONG=110; T_KERNELS=90; T_EVAL=85  # 575 s at most: one device call is 600 s
    KERNELS=config-plain-loss,config+liger
    LONGS=long,long-qlora  # LoRA and QLoRA at one 2048-token sample a step: the 24 GB and 12 GB goals
fi
ARCH="$DEV/glm-4-9b-chat/config.json"; TOK="$DEV/glm-4-9b-chat"
TRAIN="$DEV/AdvertiseGen/train.json"; DEVSET="$DEV/AdvertiseGen_fix_dev.json"
CONFIG=config/advertisegen_glm4.yaml

step() {  # step NAME TIMEOUT COMMAND...: run with a timeout, log to $OUT/NAME.log, append its table lines
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    { echo; echo "### $name (exit $rc, $(( $(date +%s) - t0 )) s)"; echo; grep '^|' "$OUT/$name.log" || echo "(no table; see $name.log)"; } >> "$TABLE"
}

{ echo "# Device check $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)"; echo
  python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" 2>&1
} > "$TABLE"

# addopts off: pyproject.toml's name pytest-xdist options, and the device image has no pytest-xdist
step gpu-tests "$T_TEST" python3 -m pytest -o addopts="" -m gpu tests/gpu -q -rfEs --durations=20 -p no:cacheprovider
grep -E "passed|failed|skipped|error" "$OUT/gpu-tests.log" | tail -1 >> "$TABLE"
step bench-train-config "$T_TRAIN" python3 -m glmtune.cli bench-train "$ARCH" "$TRAIN" --tokenizer "$TOK" --config "$CONFIG" \
    --recipes demo,config --steps "$STEPS" --logging-steps "$LOGSTEPS" --peak-tflops 989
step bench-train-long "$T_LONG" python3 -m glmtune.cli bench-train "$ARCH" "$TRAIN" --tokenizer "$TOK" --config "$CONFIG" \
    --recipes "$LONGS" --long-length "$LONG" --steps 10 --logging-steps 2
step bench-train-kernels "$T_KERNELS" python3 -m glmtune.cli bench-train "$ARCH" "$TRAIN" --tokenizer "$TOK" --config "$CONFIG" \
    --recipes "$KERNELS" --steps "$STEPS" --logging-steps "$LOGSTEPS"
step bench-eval "$T_EVAL" python3 -m glmtune.cli bench-eval "$ARCH" "$DEVSET" --tokenizer "$TOK" --config "$CONFIG" \
    --samples "$SAMPLES" --max-new-tokens 74 --demo-samples "$DEMO_SAMPLES"
echo >> "$TABLE"; echo "total $(( $(date +%s) - START )) s" >> "$TABLE"
cat "$TABLE"
