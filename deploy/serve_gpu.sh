#!/usr/bin/env bash
# Inside the GPU image (deploy/Dockerfile): export MODEL from ./checkpoints (the official
# checkpoint, downloaded there and checksum-verified when missing), build TensorRT
# engines for PROFILE, generate the repository, verify the engines, run tritonserver.
#
#   deploy/serve_gpu.sh [MODEL=tiny] [PROFILE=gpu-fp16]
#
# Exported graphs and engines are kept under ./artifacts/<model> (mount it to reuse them).
set -euo pipefail
MODEL="${1:-tiny}"
PROFILE="${2:-gpu-fp16}"
ARTIFACTS="${ARTIFACTS:-artifacts}"
REPOSITORY="${REPOSITORY:-/tmp/model_repository}"

if [ ! -f "$ARTIFACTS/$MODEL/metadata.json" ]; then
  sam2-triton export --model "$MODEL" --download-if-missing --output "$ARTIFACTS/$MODEL"
fi
case "$PROFILE" in
  gpu-fp32|gpu-tf32|gpu-fp16|gpu-bf16)
    if [ ! -f "$ARTIFACTS/$MODEL/engines/$PROFILE/image_encoder.plan" ]; then
      sam2-triton build-engines --model-dir "$ARTIFACTS/$MODEL" --profile "$PROFILE"
      sam2-triton verify-engines --model-dir "$ARTIFACTS/$MODEL" --profile "$PROFILE"
    fi ;;
esac
sam2-triton build-repository --model-dir "$ARTIFACTS/$MODEL" --profile "$PROFILE" --output "$REPOSITORY"

# Python-backend shared memory: requests carry 16 MiB of embeddings per image.
exec tritonserver --model-repository="$REPOSITORY" \
  --backend-config=python,shm-default-byte-size=67108864 \
  --backend-config=python,shm-growth-byte-size=67108864 \
  --strict-readiness=true
