#!/usr/bin/env bash
# GPU check: encode throughput (ViT-B/16, ViT-L/14, bf16, eager and torch.compile), 32-slice volume
# throughput, 1M x 512 fp16 flat search, and radretrieve's torch search backend (indexers/torch_exact.py)
# against this GPU's roofline (measured copy bandwidth and fp16 matmul rate). Needs only PyTorch and numpy;
# finishes within 8 minutes.
#
#   benchmarks/gpu_check.sh OUT_DIR [gpu_check.py options]     # writes OUT_DIR/gpu_check.json and .log
set -euo pipefail
if [ "$#" -lt 1 ]; then
    echo "usage: $0 OUT_DIR [gpu_check.py options, e.g. --device cpu --tiny]" >&2
    exit 2
fi
out="$1"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
command -v "$py" >/dev/null 2>&1 || py=python
mkdir -p "$out"
# The script starts no new phase after --budget-s (400 s); `timeout` is the hard stop at 470 s, so the
# whole check, start-up included, stays under 8 minutes. The JSON is rewritten after every phase.
timeout --kill-after=10 470 "$py" "$here/gpu_check.py" --out "$out" --budget-s 400 "$@" 2>&1 | tee "$out/gpu_check.log"
