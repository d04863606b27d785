#!/usr/bin/env bash
# The main job on the built-in default, MNIST-with-captions, on this machine's CPU:
#   0. sample the shipped model (pretrained/cpu_small) and print the digit judge's verdicts
#   1. build the data set (real MNIST, verified by MD5) into workspace/data/mnist_captions
#   2. train the cpu_small preset (bounded by TRAIN_MINUTES, default 30; a rerun resumes)
#   3. sample a grid and attention pictures for a few captions
#   4. a small evaluation (100 captions x a 100-image pool, 10 samples each) and print the table
# Everything is written under workspace/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
PY=.venv/bin/python
DATA=${DATA:-workspace/data/mnist_captions}
RUN=${RUN:-workspace/runs/cpu_small}
EVAL=${EVAL:-workspace/eval/cpu_small}
TRAIN_MINUTES=${TRAIN_MINUTES:-30}
SHIPPED=${SHIPPED:-pretrained/cpu_small}
CAPTIONS="the digit 3 is on the left of the digit 5;the digit 0 is at the top of the digit 8;the digit 7 is at the bottom right of the image;the digit 1 is at the top left of the image;the digit 5 is on the left of the digit 3"
mkdir -p workspace/main_job

echo "== 0/4 the shipped model $SHIPPED: 8 samples per caption, judged -> workspace/main_job/shipped_samples"
$PY -m text2pixel.binaries.sample --saved_model "$SHIPPED" --out_dir workspace/main_job/shipped_samples \
    --num_samples 8 --captions "$CAPTIONS" | tee workspace/main_job/shipped_samples.txt

echo "== 1/4 data: MNIST-with-captions -> $DATA"
$PY -m datasets.mnist_captions --out_dir "$DATA"

echo "== 2/4 training cpu_small for at most $TRAIN_MINUTES min -> $RUN (TensorBoard: --logdir $RUN)"
$PY -m text2pixel.binaries.train --preset cpu_small --data_dir "$DATA" --run_dir "$RUN" \
    --max_train_minutes "$TRAIN_MINUTES"

echo "== 3/4 samples -> $RUN/final_samples"
$PY -m text2pixel.binaries.sample --run_dir "$RUN" --out_dir "$RUN/final_samples" \
    --num_samples 8 --captions "$CAPTIONS" | tee workspace/main_job/run_samples.txt

echo "== 4/4 evaluation -> $EVAL"
$PY -m text2pixel.binaries.evaluate --run_dir "$RUN" --data_dir "$DATA" --out_dir "$EVAL" \
    --num_captions 100 --pool 100 --ssim_captions 100 --ssim_samples 10 \
    --model_name "alignPixelRNN (cpu_small)"
echo "pictures: $DATA/preview.png, $RUN/final_samples/, $EVAL/samples.png; metrics: $EVAL/results.json"
echo "the digit judge on the same 5 captions x 8 samples:"
echo "  shipped model ($SHIPPED): $(grep 'samples right' workspace/main_job/shipped_samples.txt | tail -1)"
echo "  this run ($RUN, $TRAIN_MINUTES min): $(grep 'samples right' workspace/main_job/run_samples.txt | tail -1)"
