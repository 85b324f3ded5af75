#!/usr/bin/env bash
# What we run when a session is lent a GPU: one short prepared script that records every GPU number at once.
#   1. the demo trained on the GPU in bf16-mixed (the trainer's CUDA path: Fabric, fused AdamW, evaluation);
#   2. benchmarks/train_step.py: base and large at 128 image-text + 128 box-text pairs in bf16, eager, every
#      text padded to 40 tokens and with realistic caption/phrase lengths, plus a kernel profile of one step;
#   3. base in the official loader's shape (box pairs from 50 images);
#   4. base with torch.compile'd encoders;
#   5. base with token packing and cross-attention grouping on the GPU (--pack always: exact, host reads
#      to plan each text/fusion call, ~10 a step), realistic texts: whether unpadding pays there despite them;
#   6. benchmarks/data.py: loader throughput per worker, and JPEG decoding on the GPU (nvjpeg).
# Results land in $OUT (default /tmp/x2vlm-cuda). Wheels for packages the machine lacks may sit in .whl/.
# Stages run in that order; name some to run only those (their time limits add up to more than one device
# call's 600 s: e.g. `benchmarks/cuda_check.sh demo bench shape`, then `... compile pack data`).
#   benchmarks/cuda_check.sh [demo] [bench] [shape] [compile] [pack] [data]
set -uo pipefail
OUT=${OUT:-/tmp/x2vlm-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, timm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"

stages=" ${*:-demo bench shape compile pack data} "
want() { [[ "$stages" == *" $1 "* ]]; }

if want demo; then
demo=/tmp/x2vlm-demo-cuda
rm -rf "$demo"
timeout "${DEMO_TIMEOUT:-180}" python3 -m x2vlm_core.cli pretrain --config configs/demo.yaml --quiet \
  --set train.accelerator=gpu --set train.precision=bf16-mixed --set "train.out_dir=$demo" \
  --set "model.text.tokenizer=$demo/tokenizer" --set "train.tokenizer.out=$demo/tokenizer" 2>&1 | tail -30 | tee "$OUT/demo.log"
cp "$demo/eval.json" "$OUT/demo-eval.json" 2>/dev/null
fi

want bench && timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/train_step.py --device cuda --batch 128 --precision bf16 \
  --configs base large --texts padded realistic --steps 10 --profile --out "$OUT" 2>&1 \
  | grep -v "^USDT\|profiler_st" | tee "$OUT/bench.log"

want shape && mkdir -p "$OUT/official_shape" && timeout "${SHAPE_TIMEOUT:-120}" python3 benchmarks/train_step.py --device cuda --batch 128 --precision bf16 \
  --configs base --box-images 50 --texts padded --steps 10 --out "$OUT/official_shape" 2>&1 \
  | grep -v "^USDT\|profiler_st" | tee "$OUT/official_shape/bench.log"

want compile && mkdir -p "$OUT/compiled" && timeout "${COMPILE_TIMEOUT:-200}" python3 benchmarks/train_step.py --device cuda --batch 128 --precision bf16 \
  --configs base --compile on --texts padded realistic --steps 10 --out "$OUT/compiled" 2>&1 \
  | grep -v "^USDT\|profiler_st" | tee "$OUT/compiled/bench.log"

want pack && mkdir -p "$OUT/packed" && timeout "${PACK_TIMEOUT:-120}" python3 benchmarks/train_step.py --device cuda --batch 128 --precision bf16 \
  --configs base --pack always --texts realistic --steps 10 --out "$OUT/packed" 2>&1 \
  | grep -v "^USDT\|profiler_st" | tee "$OUT/packed/bench.log"

want data && timeout "${DATA_TIMEOUT:-120}" python3 benchmarks/data.py --scale 0.3 --out "$OUT/data-cuda.json" 2>&1 | tee "$OUT/data.log"

exit 0  # each stage logs how it went under $OUT
