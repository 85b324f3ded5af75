#!/usr/bin/env bash
# What we run when a session is lent a GPU: one short prepared script that records every GPU number at once.
# Stages, most wanted first (a session's device time is ~15 minutes, start-up included):
#   bench    benchmarks/train_step.py: base and large at 128 image-text + 128 box-text pairs in bf16, eager,
#            every text padded to 40 tokens and with realistic caption/phrase lengths, a kernel profile;
#   flex     the BEiT-2 ViT with its relative-position bias inside flex attention against timm's SDPA path
#            (benchmarks/vit_attention.py: time, and values/gradients compared), then base with it;
#   compile  base with torch.compile'd encoders, cold, then again from the kept compile cache on an empty
#            inductor cache directory (a fresh machine): the warm-up each costs (warmup_s);
#   step     base with the whole step compiled, losses included (train.compile: step);
#   pack     base with token packing and cross-attention grouping on the GPU (--pack always: exact, ~10 host
#            reads a step to plan): whether unpadding pays there despite them;
#   shape    base in the official loader's shape (box pairs from 50 images);
#   data     benchmarks/data.py: loader throughput per worker, and JPEG decoding on the GPU (nvjpeg);
#   demo     the demo trained on the GPU in bf16-mixed (the trainer's CUDA path: Fabric, fused AdamW, evaluation).
# Every stage gets at most its own limit and what is left of BUDGET seconds (default 540, one device call
# under 600 s); a stage with under 30 s left is skipped and says so (the limits add up to more than the
# budget: the later stages run when the earlier ones finish early, or in a second call that names them).
#   benchmarks/cuda_check.sh [bench] [flex] [compile] [step] [pack] [shape] [data] [demo]
# Results land in $OUT (default /tmp/x2vlm-cuda). Wheels for packages the machine lacks may sit in .whl/.
set -uo pipefail
OUT=${OUT:-/tmp/x2vlm-cuda}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, timm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"

stages=" ${*:-bench flex compile step pack shape data demo} "
start=$SECONDS
# run NAME LIMIT COMMAND...: the command under min(LIMIT, budget left), its output in $OUT/NAME.log
run() {
  local name=$1 limit=$2 left=$((BUDGET - (SECONDS - start)))
  shift 2
  [[ "$stages" == *" $name "* ]] || return 0
  if (( left < 30 )); then echo "== $name: skipped, ${left} s of the budget left" | tee -a "$OUT/skipped.txt"; return 0; fi
  echo "== $name (limit $(( limit < left ? limit : left )) s)"
  timeout "$(( limit < left ? limit : left ))" "$@" 2>&1 | grep -v "^USDT\|profiler_st" | tee "$OUT/$name.log"
}
step=(python3 benchmarks/train_step.py --device cuda --batch 128 --precision bf16 --steps 10)

run bench 180 "${step[@]}" --configs base large --texts padded realistic --profile --out "$OUT"
mkdir -p "$OUT/flex" "$OUT/compiled" "$OUT/step_compiled" "$OUT/packed" "$OUT/official_shape"
run flex 120 bash -c "python3 benchmarks/vit_attention.py --device cuda --out '$OUT/flex' && \
  ${step[*]} --configs base --texts realistic --set model.vision.attention=flex --out '$OUT/flex'"
mkdir -p "$OUT/compiled/warm"
cache=/tmp/x2vlm-compile-cache.bin  # not under $OUT: too large to come back; its size goes in the log
rm -rf /tmp/x2vlm-inductor-cold /tmp/x2vlm-inductor-warm "$cache"  # cold means cold on a rerun too
run compile 260 bash -c "TORCHINDUCTOR_CACHE_DIR=/tmp/x2vlm-inductor-cold ${step[*]} --configs base --compile encoders \
  --texts realistic --compile-cache $cache --out '$OUT/compiled' && ls -l $cache && \
  TORCHINDUCTOR_CACHE_DIR=/tmp/x2vlm-inductor-warm ${step[*]} --configs base --compile encoders --texts realistic \
  --compile-cache $cache --out '$OUT/compiled/warm'"
run step 200 "${step[@]}" --configs base --compile step --texts realistic --out "$OUT/step_compiled"
run pack 90 "${step[@]}" --configs base --pack always --texts realistic --out "$OUT/packed"
run shape 60 "${step[@]}" --configs base --box-images 50 --texts padded --out "$OUT/official_shape"
run data 90 python3 benchmarks/data.py --scale 0.3 --out "$OUT/data-cuda.json"
demo=/tmp/x2vlm-demo-cuda
rm -rf "$demo"
run demo 180 python3 -m x2vlm_core.cli pretrain --config configs/demo.yaml --quiet \
  --set train.accelerator=gpu --set train.precision=bf16-mixed --set "train.out_dir=$demo" \
  --set "model.text.tokenizer=$demo/tokenizer" --set "train.tokenizer.out=$demo/tokenizer"
cp "$demo/eval.json" "$OUT/demo-eval.json" 2>/dev/null
echo "total $((SECONDS - start)) s"
exit 0  # each stage logs how it went under $OUT
