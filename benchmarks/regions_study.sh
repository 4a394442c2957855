#!/usr/bin/env bash
# Issue 24's measurements on SynthTweets (the demo's set, the demo's schedule), one step after
# another with both cores: a detector on the gold boxes and its box AP; the region caches; grid
# against detector regions; training from a cache against reading the images (the same frozen
# image side). Every step skips what its output file already holds, so a stopped run continues.
#
#   bash benchmarks/regions_study.sh [OUT_DIR]      # default benchmarks/results/regions
#
# Figures and their reading: BENCHMARKS.md, "Detector regions and the region cache".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-benchmarks/results/regions}
PY=${PYTHON:-.venv/bin/python}
DATA=data/synth
WORK=${REGIONS_WORK:-runs/regions}
DET=$WORK/synth_detector
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT" "$WORK"
say() { echo "=== regions_study: $* ($(date -u +%H:%M:%S))"; }

# the demo's SynthTweets set (the experiment regenerates data/synth when its sizes differ)
$PY -m mnerqg_graph synth --out $DATA --seed 0 --train 2000 --valid 400 --test 400 >/dev/null

# 1. a Faster R-CNN (mobilenet_v3 FPN, random initialisation: no image weights offline) on the
#    gold boxes, classes = entity types; few proposals and sampled RoIs (about one box an image)
if [[ ! -f $DET/model.safetensors ]]; then
  say "detector"
  /usr/bin/time -f "detector training: %e s wall" $PY -m detectors.detector train --data $DATA \
    --out $DET --epochs "${DETECTOR_EPOCHS:-6}" --lr 3e-4 --image-size 64 --min-size 128 \
    --max-size 128 --seed 0 --device cpu --no-progress \
    --backend-kwargs '{"rpn_pre_nms_top_n": 200, "rpn_post_nms_top_n": 100, "box_batch_size_per_image": 64}' \
    2>&1 | tee "$OUT/detector_train.log"
fi
if [[ ! -s $OUT/detector_ap.json ]]; then
  say "box AP"
  $PY -m detectors.detector evaluate --detector $DET --data $DATA --split test --image-size 64 \
    --device cpu --json | tail -n 1 >"$OUT/detector_ap.json.tmp"
  mv "$OUT/detector_ap.json.tmp" "$OUT/detector_ap.json"
fi

# 2. the region caches (the demo's small_cnn backbone, random initialisation from seed 0)
for kind in grid det; do
  if [[ ! -f $WORK/cache_$kind/cache.json ]]; then
    say "extract-regions $kind"
    src=(--grid)
    [[ $kind == det ]] && src=(--detector $DET)
    /usr/bin/time -f "extract-regions $kind: %e s wall" $PY -m mnerqg_graph extract-regions \
      "${src[@]}" --data $DATA --out $WORK/cache_$kind --seed 0 --no-progress \
      2>&1 | tail -n 3 | tee "$OUT/extract_$kind.log"
  fi
done

CF=($PY -m benchmarks.compare_fusion --data-root $DATA --threads "$OMP_NUM_THREADS")
# 3. grid against detector regions, the same frozen image side, from the caches (three seeds)
say "frozen image side, from the caches"
"${CF[@]}" --seeds 0 1 2 --configs hetero_gat --set data.region_cache=$WORK/cache_grid \
  --runs "$OUT/grid_cache.jsonl" --out "$OUT/grid_cache.md"
"${CF[@]}" --seeds 0 1 2 --configs hetero_gat+detector_regions \
  --set model.image.detector=$DET data.region_cache=$WORK/cache_det \
  --runs "$OUT/det_cache.jsonl" --out "$OUT/det_cache.md"
# 4. the demo as it trains by default: grid regions, the backbone trained (three seeds)
say "grid, trained backbone"
"${CF[@]}" --seeds 0 1 2 --configs hetero_gat --runs "$OUT/grid_trained.jsonl" \
  --out "$OUT/grid_trained.md"
# 5. the same frozen image side reading the images (seed 0): time per epoch against 3., and the
#    metrics equal to 3.'s seed 0
say "frozen image side, reading the images"
"${CF[@]}" --seeds 0 --configs hetero_gat \
  --set model.image.freeze_image=True model.image.backbone_kwargs.weights=$WORK/cache_grid/backbone.safetensors \
  --runs "$OUT/grid_nocache.jsonl" --out "$OUT/grid_nocache.md"
"${CF[@]}" --seeds 0 --configs hetero_gat+detector_regions \
  --set model.image.detector=$DET model.image.freeze_image=True \
  model.image.backbone_kwargs.weights=$WORK/cache_det/backbone.safetensors \
  --runs "$OUT/det_nocache.jsonl" --out "$OUT/det_nocache.md"
# 6. detector regions with the backbone trained (three seeds; the detector runs every step)
say "detector regions, trained backbone"
"${CF[@]}" --seeds 0 1 2 --configs hetero_gat+detector_regions --set model.image.detector=$DET \
  --runs "$OUT/det_trained.jsonl" --out "$OUT/det_trained.md"
say "done"
