#!/usr/bin/env bash
# Builds what tools/device_check.sh carries to the lent GPU machine (both folders git-ignored), so a session that is
# lent one spends its device minutes on the check, not on preparing it:
#   .whl/      the wheels the device image (Python 3.12, torch 2.11, CUDA 13) lacks, downloaded from PyPI for
#              Python 3.12 on x86-64 Linux, the versions pinned in constraints.txt
#   .devdata/  the GLM-4-9B-chat architecture and tokenizer, AdvertiseGen train and dev rows, from ../shared/data
# and checks that they and the tracked tree stay under the 64 MiB a device call carries. Then, with the device tool:
#   run  command: tools/device_check.sh   carry: [".whl", ".devdata"]   timeout_s: 600
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${GLMTUNE_SHARED_DATA:-../shared/data}
LIMIT_MIB=64

pin() {  # the version constraints.txt pins
    local version
    version=$(grep -i "^$1==" constraints.txt | cut -d= -f3)
    [ -n "$version" ] || { echo "constraints.txt pins no $1" >&2; exit 1; }
    echo "$1==$version"
}

rm -rf .whl .devdata
mkdir -p .whl .devdata/glm-4-9b-chat .devdata/AdvertiseGen
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest .whl \
    --python-version 3.12 --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 --platform any \
    "$(pin transformers)" "$(pin peft)" "$(pin datasets)" "$(pin dill)" "$(pin multiprocess)" \
    "$(pin liger-kernel)" "$(pin bitsandbytes)"

for file in config.json tokenizer.model tokenizer_config.json; do
    cp "$SHARED/tokenizers/glm-4-9b-chat/$file" .devdata/glm-4-9b-chat/
done
cp "$SHARED/AdvertiseGen/train.json" .devdata/AdvertiseGen/train.json
cp "$SHARED/chatglm3/AdvertiseGen_fix_dev.json" .devdata/AdvertiseGen_fix_dev.json

ls -1 .whl
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)  # the working tree travels too
total=$(( tree + $(du -cb .whl .devdata | tail -1 | cut -f1) ))
echo "carried: $(( total / 1024 / 1024 )) MiB of $LIMIT_MIB (the tracked tree, .whl, .devdata)"
[ "$total" -lt $(( LIMIT_MIB * 1024 * 1024 )) ] || { echo "over the device's $LIMIT_MIB MiB: carry less" >&2; exit 1; }
