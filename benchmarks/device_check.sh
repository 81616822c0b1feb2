#!/usr/bin/env bash
# One-shot check on a lent GPU machine (no network), from the repo root:
#
#   OUT=/some/empty/dir bash benchmarks/device_check.sh
#
# Installs the wheels in .whl/ (the packages the machine lacks: open_clip_torch, ftfy, wcwidth, nibabel,
# pydicom) into /tmp/site, puts the repo on PYTHONPATH (not pip-installed), then runs, each phase under its
# own `timeout` and whatever the previous one did:
#   phase 1: tests/test_gpu.py (CUDA paths vs the CPU)        -> $OUT/gpu_tests.log
#   phase 2: benchmarks/gpu_check.py (throughput, torch only) -> $OUT/gpu_check/gpu_check.{json,log}
#   phase 3: benchmarks/index_throughput.py, ViT-B/16 on cuda    -> $OUT/index_throughput_cuda.{json,log}
# and prints one PASS/FAIL line per phase at exit (also written to $OUT/summary.txt).
# Wall time: install + versions ~20 s, then each phase <= its P*_TIMEOUT_S (+10 s kill grace): 9 min at most.
set -u

OUT="${OUT:?set OUT to an empty folder for the results}"
P1_TIMEOUT_S="${P1_TIMEOUT_S:-120}"   # GPU tests (about a minute on a CPU-only dry run of the same calls)
P2_TIMEOUT_S="${P2_TIMEOUT_S:-220}"   # gpu_check.py hard stop; its JSON is rewritten after every phase
P2_BUDGET_S="${P2_BUDGET_S:-195}"     # gpu_check.py starts no phase after this (compiled ViT-L needs 150 s left)
P2_ARGS="${P2_ARGS:-}"                # extra gpu_check.py options, e.g. "--device cpu --tiny" for a dry run
SITE="${SITE:-/tmp/site}"

mkdir -p "$OUT"
SUMMARY=()   # "phase: PASS|FAIL ..." lines, printed at exit
STARTED=$SECONDS

record() {  # record NAME STATUS DETAIL...
    local name="$1" status="$2"
    shift 2
    SUMMARY+=("$name: $status${*:+ ($*)} [$((SECONDS - STARTED)) s]")
    echo "=== $name: $status${*:+ ($*)}"
}

summary() {
    echo
    echo "=== device_check summary (total $((SECONDS - STARTED)) s)"
    printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
}
trap summary EXIT

# ------------------------------------------------------------------ install + environment
echo "=== install wheels into $SITE"
if ls .whl/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" .whl/*.whl; then
    record install PASS "$(ls .whl/*.whl | wc -l) wheels"
else
    record install FAIL "pip install from .whl/ failed (or no wheels: was .whl carried?)"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "=== environment"
nvidia-smi -L 2>&1 || echo "nvidia-smi: not available"
timeout 120 python3 - <<'EOF' 2>&1
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.0f} GiB", "bf16", torch.cuda.is_bf16_supported())
for name in ("torchvision", "timm", "open_clip", "ftfy", "wcwidth", "nibabel", "pydicom", "pyarrow", "numpy",
             "radretrieve", "pipelines"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:12s}", getattr(mod, "__version__", "-"), mod.__file__)
    except Exception as exc:  # noqa: BLE001 - report every missing piece, then go on
        print(f"{name:12s} IMPORT FAILED: {type(exc).__name__}: {exc}")
EOF

# ------------------------------------------------------------------ phase 1: GPU tests
echo "=== phase 1: tests/test_gpu.py (timeout ${P1_TIMEOUT_S} s)"
timeout --kill-after=10 "$P1_TIMEOUT_S" python3 -m pytest -q -p no:cacheprovider -rfEs --durations=8 \
    tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
rc=${PIPESTATUS[0]}
last=$(grep -E '[0-9]+ (passed|failed|error|errors|skipped)' "$OUT/gpu_tests.log" | tail -n 1)
if [ "$rc" -eq 0 ] && ! grep -q skipped <<<"$last"; then
    record "phase 1 gpu tests" PASS "$last"
elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    record "phase 1 gpu tests" FAIL "timed out after ${P1_TIMEOUT_S} s; $last"
elif [ "$rc" -eq 0 ]; then
    record "phase 1 gpu tests" FAIL "tests skipped: no CUDA device seen? $last"
else
    record "phase 1 gpu tests" FAIL "pytest exit $rc; $last"
fi

# ------------------------------------------------------------------ phase 2: gpu_check throughput
# gpu_check.py directly (not gpu_check.sh, whose own hard stop is 470 s) with a smaller budget.
echo "=== phase 2: benchmarks/gpu_check.py (budget ${P2_BUDGET_S} s, timeout ${P2_TIMEOUT_S} s)"
mkdir -p "$OUT/gpu_check"
# shellcheck disable=SC2086 - P2_ARGS is a list of options
timeout --kill-after=10 "$P2_TIMEOUT_S" python3 benchmarks/gpu_check.py --out "$OUT/gpu_check" \
    --budget-s "$P2_BUDGET_S" $P2_ARGS 2>&1 | tee "$OUT/gpu_check/gpu_check.log"
rc=${PIPESTATUS[0]}
brief=$(python3 - "$OUT/gpu_check/gpu_check.json" <<'EOF' 2>&1
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as exc:  # noqa: BLE001
    print(f"no JSON: {type(exc).__name__}"); raise SystemExit(0)
enc = ", ".join(f"{r['model']}{' compiled' if r['compiled'] else ''} {r['images_per_s']:.0f} img/s"
                for r in d["encode"])
srch = ", ".join(f"{r['backend']} {r['qps']:.0f} qps" for r in d["search"])
vol = ", ".join(f"{r['volumes_per_s']} vol/s" for r in d["volume"])
err = "; ".join(f"{e['phase']}: {e['error'][:60]}" for e in d["errors"])
skip = "; ".join(s["phase"] for s in d["skipped"])
print(f"{d.get('machine', {}).get('gpu')}; {enc}; volumes {vol}; {srch}; errors [{err}]; skipped [{skip}]; {d['seconds']} s")
EOF
)
if [ "$rc" -eq 0 ] && [ -s "$OUT/gpu_check/gpu_check.json" ]; then
    record "phase 2 gpu_check" PASS "$brief"
elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    record "phase 2 gpu_check" FAIL "timed out after ${P2_TIMEOUT_S} s, finished phases kept: $brief"
else
    record "phase 2 gpu_check" FAIL "exit $rc; $brief"
fi

# ------------------------------------------------------------------ phase 3: index throughput on cuda
# ViT-B/16 on the GPU: `radretrieve index` end to end vs the raw encoder, 14 readers on the 16 cores.
P3_TIMEOUT_S="${P3_TIMEOUT_S:-150}"
echo "=== phase 3: index throughput on cuda (timeout ${P3_TIMEOUT_S} s)"
timeout --kill-after=10 "$P3_TIMEOUT_S" python3 -m benchmarks.index_throughput --model radclip-vit-b-16 \
    --studies 200 --image-size 224 --batch-size 256 --workers 14 --raw-items 60 --device cuda \
    --out "$OUT/index_throughput_cuda.json" 2>&1 | tee "$OUT/index_throughput_cuda.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 0 ] && [ -s "$OUT/index_throughput_cuda.json" ]; then
    record "phase 3 index throughput" PASS "$(grep -E 'studies:' "$OUT/index_throughput_cuda.log" | tail -n 1)"
else
    record "phase 3 index throughput" FAIL "exit $rc"
fi
