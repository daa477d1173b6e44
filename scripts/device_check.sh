#!/usr/bin/env bash
# Measured figures on one GPU or TPU VM, in one command (at most 8 minutes):
# train step times of ours and of the paper's Keras model on Keras 3's JAX
# back end at configs/isic.py's size, float32 and bfloat16; tiled prediction
# throughput; the accelerator's logits against the CPU's on one batch. The
# last line is one JSON object (sharp_unet_jax/device_check.py says what each
# field is). Flags go to the program, e.g.:
#
#   scripts/device_check.sh                                  # isic, 420 s budget
#   scripts/device_check.sh --config=configs/tiny.py --dtypes=float32 \
#       --steps=1 --rounds=1 --budget_s=600              # what CI runs, on CPU
#   PYTHON=.venv/bin/python scripts/device_check.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
exec "${PYTHON:-python}" -m sharp_unet_jax.device_check "$@"
