#!/usr/bin/env bash
# What this pack wants from a lent GPU, as one prepared command that ends inside the device tool's
# 10-minute limit (a task gets 15 minutes of device time in all, start-up included). Run here first
# with --dry-run (CPU, seconds) to check that every step starts. On the device machine:
#
#   run(command="bash tools/gpu_session.sh", carry=[".gpu_data", ".whl"], timeout_s=590)
#
# Prepare, once per machine, in the repository root (both folders are git-ignored):
#   python tools/prepare_default_data.py --skimage scikit_image-0.26.0-*.whl --debian DEBS --out .gpu_data
#   (then remove .gpu_data/train/dead_leaves_0030..0119.png: the bundled model's card trains on 30 of them)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers importlib_metadata   # the device image lacks both
#
# Steps, each bounded by `timeout`, each writing under $OUT (8 files come back at most):
#   1. env.txt: GPU, driver, torch;
#   2. the bundled HI-Diff model trained on: a 20-iteration probe sets the iteration count that fits
#      TRAIN_SECONDS, then the run, from the bundled weights with the model card's blur mix at 128 px
#      patches, batch 16, bf16 autocast → hidiff_gpu.safetensors, hidiff_gpu_loss.csv;
#   3. bench_bf16.md, bench_fp32.md: FideDiff d=8/d=4, OSDD and DeblurDiff's 50 steps, SD 2.1-sized
#      random weights (bench/bench_onestep.py; each part warmed up once, then timed);
#   4. half.txt: the bundled model on the example photos in fp16 and bf16 against fp32 (PSNR between them).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
TRAIN_SECONDS=${TRAIN_SECONDS:-180}
export PYTHONUNBUFFERED=1 DEBLUR_NO_PROGRESS=1
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ $DRY = 1 ]; then
    DEVICE=cpu AMP=off PATCH=64 BATCH=2 PROBE=2 SIZES="64x64" STEPS_DTYPES="fp32"
else
    DEVICE=cuda AMP=bf16 PATCH=128 BATCH=16 PROBE=20 SIZES="512x512 1280x720" STEPS_DTYPES="bf16 fp32"
fi
{ nvidia-smi 2>/dev/null | head -15; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1

# 2. training: the probe's seconds per iteration (second half of the probe, start-up excluded) size the run
BLUR=(--mix --kernel-size 31 --intensity 0.1 1.0 --noise 0 0.02 --gamma 2.2 --scale 0.4 1.0)
MODEL=models/hidiff/default/hidiff_compact_synthetic.safetensors
if [ -d .gpu_data/train ]; then
    rm -rf /tmp/probe /tmp/gpurun
    timeout 120 $PY tools/train_hidiff.py --sharp .gpu_data/train --run /tmp/probe --init $MODEL --iters 0 $PROBE \
        --batch $BATCH --patch $PATCH --device $DEVICE --amp $AMP --threads 8 --log-every $((PROBE / 2)) "${BLUR[@]}" \
        > "$OUT/train.log" 2>&1
    RATE=$($PY -c "import csv; r=list(csv.DictReader(open('/tmp/probe/loss_log.csv'))); print((float(r[-1]['seconds'])-float(r[0]['seconds']))/(int(r[-1]['iteration'])-int(r[0]['iteration'])))" 2>>"$OUT/train.log")
    ITERS=$($PY -c "print(max(10, int($TRAIN_SECONDS / max(${RATE:-1}, 1e-3))))")
    [ $DRY = 1 ] && ITERS=4
    echo "probe: ${RATE:-?} s/iteration; running $ITERS iterations" >> "$OUT/train.log"
    timeout $((TRAIN_SECONDS + 90)) $PY tools/train_hidiff.py --sharp .gpu_data/train --run /tmp/gpurun --init $MODEL \
        --iters 0 $ITERS --batch $BATCH --patch $PATCH --device $DEVICE --amp $AMP --threads 8 --lr 3e-4 --seed 200 \
        --colour-fix 16 --val .gpu_data/eval --val-every $((ITERS / 4 > 0 ? ITERS / 4 : 1)) --val-count 4 "${BLUR[@]}" \
        --output "$OUT/hidiff_gpu.safetensors" --notes "tools/gpu_session.sh on $DEVICE" >> "$OUT/train.log" 2>&1
    cp /tmp/gpurun/loss_log.csv "$OUT/hidiff_gpu_loss.csv" 2>/dev/null
else
    echo "no .gpu_data/train: training skipped (see the header)" > "$OUT/train.log"
fi

# 3. benchmarks: one table per precision; each case's JSON row also goes to train.log as it ends, so a
# timeout loses only the case it stopped
methods="fidediff8 fidediff4 osdd deblurdiff"
[ $DRY = 1 ] && methods="fidediff8"
for dtype in $STEPS_DTYPES; do
    sizes=$SIZES
    [ "$dtype" = fp32 ] && [ $DRY = 0 ] && sizes="512x512"
    timeout 120 $PY bench/bench_onestep.py --device $DEVICE --dtype $dtype --sizes $sizes --methods $methods \
        > "$OUT/bench_$dtype.md" 2>> "$OUT/train.log"
done

# 4. half precision against fp32 on the example photos (the bundled model; bf16 and fp16 on the GPU)
rm -rf /tmp/half && mkdir -p /tmp/half
for precision in fp32 fp16 bf16; do
    [ $DRY = 1 ] && [ $precision = fp16 ] && continue  # fp16 convolutions are GPU-only
    timeout 60 $PY tools/deblur.py example_images/deblur_example_cat_blurred.png --out /tmp/half/$precision \
        --device $DEVICE --precision $precision >> "$OUT/train.log" 2>&1
done
$PY - > "$OUT/half.txt" 2>&1 <<'EOF'
import glob, os
import numpy as np
from PIL import Image
ref = {os.path.basename(p): np.asarray(Image.open(p), np.float64) for p in glob.glob("/tmp/half/fp32/*.png")}
for precision in ("fp16", "bf16"):
    if not glob.glob(f"/tmp/half/{precision}/*.png"):
        print(precision, "no output (see train.log)")
    for path in sorted(glob.glob(f"/tmp/half/{precision}/*.png")):
        a, b = np.asarray(Image.open(path), np.float64), ref[os.path.basename(path)]
        mse = ((a - b) ** 2).mean()
        print(precision, os.path.basename(path), "PSNR vs fp32", "inf" if mse == 0 else f"{10 * np.log10(255 ** 2 / mse):.2f} dB",
              "max diff", int(abs(a - b).max()), "levels")
EOF
ls -la "$OUT"
