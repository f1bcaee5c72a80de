#!/usr/bin/env bash
# GPU check of issue 13.6, for a CUDA machine (CI never has one); about 6-9 min.
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# 1. Installs what the machine lacks (lightly, kornia, pydantic, optionally
#    faiss-gpu) from wheels in .whl/ if that folder exists (gitignored; fill it
#    beforehand on a machine with a network, for the GPU machine's Python 3.12;
#    --no-deps keeps torch out (the machine has it), so list the missing deps:
#    pip download -d .whl --no-deps --only-binary=:all: --python-version 3.12 \
#        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#        lightly hydra-core omegaconf antlr4-python3-runtime kornia kornia-rs \
#        pydantic pydantic-core annotated-types typing-inspection
#    plus faiss-gpu only where its CUDA runtime matches the machine's (FACTS.md
#    "Installing"; the wheel is large: the device tool carries 64 MiB at most).
#    Without .whl/ it uses what is installed.
# 2. Runs the CUDA tests, then each part of benchmarks/gpu_bench.py under its own
#    time limit. A failing part is recorded as such; the others still run.
# 3. Writes benchmarks/results/gpu.md (and copies it and the log to $OUT if set).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
PARTS_DIR=$(mktemp -d)
RESULT=benchmarks/results/gpu.md
LOG=$PARTS_DIR/gpu_check.log
mkdir -p benchmarks/results
: >"$LOG"

status() { echo "$*" | tee -a "$LOG"; }

# part NAME LIMIT_S CMD...: runs CMD with a time limit, records ok/failed/timeout.
part() {
    local name=$1 limit=$2
    shift 2
    local start rc=0
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1 || rc=$?
    local took=$(($(date +%s) - start))
    case $rc in
    0) status "- $name: ok (${took} s)" ;;
    124 | 137) status "- $name: TIMED OUT after ${limit} s" ;;
    *) status "- $name: FAILED (exit $rc, ${took} s; see the log)" ;;
    esac
    echo "- $name: exit $rc, ${took} s" >>"$PARTS_DIR/status.md"
}

if [ -d .whl ]; then
    shopt -s nullglob
    wheels=()
    for wheel in .whl/*.whl; do
        case $(basename "$wheel") in faiss*) ;; *) wheels+=("$wheel") ;; esac
    done
    faiss_wheels=(.whl/faiss_gpu*.whl)
    if [ ${#wheels[@]} -gt 0 ]; then
        part "install ${#wheels[@]} wheels from .whl/" 60 \
            "$PY" -m pip install --no-index --no-deps "${wheels[@]}"
    fi
    if [ ${#faiss_wheels[@]} -gt 0 ]; then
        part "install faiss-gpu from .whl/" 60 \
            "$PY" -m pip install --no-index --no-deps "${faiss_wheels[@]}"
    fi
fi
"$PY" - <<'EOF' | tee -a "$LOG" >"$PARTS_DIR/env.md"
import importlib, torch
print(f"- device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA'}; "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}")
for name in ("lightly", "kornia", "pydantic", "timm", "pytorch_lightning", "faiss"):
    try:
        module = importlib.import_module(name)
        extra = ""
        if name == "faiss":
            extra = f", GPUs seen by faiss: {module.get_num_gpus()}" if hasattr(module, "get_num_gpus") else ""
        print(f"- {name} {getattr(module, '__version__', '?')}{extra}")
    except Exception as error:  # noqa: BLE001 - report and go on
        print(f"- {name}: not importable ({type(error).__name__}: {error})")
EOF

part "CUDA tests (pytest -k 'cuda or gpu')" 90 \
    "$PY" -m pytest tests -q -x -p no:cacheprovider -k "cuda or gpu" -m "not distributed"
for name in train-mae train-moco train-grafted; do
    part "$name" 90 "$PY" benchmarks/gpu_bench.py "$name" --out "$PARTS_DIR"
done
part augment 45 "$PY" benchmarks/gpu_bench.py augment --out "$PARTS_DIR"
part knn 75 "$PY" benchmarks/gpu_bench.py knn --out "$PARTS_DIR"

{
    echo "# GPU check (benchmarks/gpu_check.sh, issue 13.6)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), \`bash benchmarks/gpu_check.sh\`."
    echo
    cat "$PARTS_DIR/env.md"
    echo
    echo "Parts:"
    cat "$PARTS_DIR/status.md"
    echo
    echo "ViT-B/16, bf16-mixed, SDPA attention, our Lightning step (random 224 px"
    echo "images, host-to-device copy of the float views included):"
    echo
    echo "| case | batch x views | images/s | ms/step (min-max) | TFLOP/step | MFU (bf16 dense peak) |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in train-mae train-moco train-grafted; do
        if [ -f "$PARTS_DIR/$name.md" ]; then cat "$PARTS_DIR/$name.md"; else echo "| $name | failed | | | | |"; fi
    done
    echo
    for name in augment knn; do
        if [ -f "$PARTS_DIR/$name.md" ]; then cat "$PARTS_DIR/$name.md"; else echo "$name: failed (see the log)."; fi
        echo
    done
} >"$RESULT"
cat "$RESULT"
if [ -n "${OUT:-}" ]; then
    cp "$RESULT" "$LOG" "$OUT"/
fi
