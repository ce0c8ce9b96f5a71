#!/usr/bin/env bash
# One-shot check of replicate on a GPU machine, within 9 minutes on one GPU (docs/gpu.md).
#
#   bash scripts/gpu_check.sh [--out DIR] [--wheels DIR] [--cpu-dry-run]
#
#   --out DIR       where every part writes its log and results (default gpu-check/<time>)
#   --wheels DIR    install the package and its dependencies from this folder of wheels, offline
#                   (a GPU machine may have no package index); torch itself must already be installed
#   --cpu-dry-run   run every part on the CPU with a few steps: checks that the script composes
#
# Each part runs under its own time limit and appends one line to DIR/summary.tsv (part, exit code,
# seconds) as soon as it ends, so a late failure keeps the early results. The script exits non-zero
# when any part failed; it never stops at the first failure.
set -u

OUT="gpu-check/$(date -u +%Y-%m-%dT%H-%M-%SZ)"
WHEELS=""
DEVICE=cuda
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --cpu-dry-run) DEVICE=cpu; DRY=1; shift ;;
    *) echo "error: unknown option $1; allowed: --out DIR, --wheels DIR, --cpu-dry-run" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export WANDB_MODE=offline WANDB_SILENT=true REPLICATE_CACHE="$OUT/cache"
printf 'part\texit\tseconds\n' > "$OUT/summary.tsv"
FAILED=0

# the whole check's budget: 9 minutes; a part gets its own limit or what is left, whichever is less.
# The dry run's CPU is slower than a GPU: its limits and budget are SLOWER times as long.
if [ "$DRY" -eq 1 ]; then SLOWER=4; else SLOWER=1; fi
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET_S:-$((540 * SLOWER))}))

# part NAME LIMIT_S COMMAND...: run COMMAND with its output in OUT/NAME.log, record how it ended
part() {
  local name="$1" limit="$2"; shift 2
  local started=$SECONDS left=$((DEADLINE - SECONDS))
  limit=$((limit * SLOWER))
  if [ "$left" -lt 10 ]; then
    printf '%s	skipped (budget spent)	0
' "$name" >> "$OUT/summary.tsv"; FAILED=1; return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local code=$?
  printf '%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - started))" >> "$OUT/summary.tsv"
  [ "$code" -eq 0 ] || { FAILED=1; echo "   failed ($code): see $OUT/$name.log"; tail -n 5 "$OUT/$name.log"; }
}

# steps per run: a few hundred on the GPU, a handful in the dry run
if [ "$DRY" -eq 1 ]; then STEPS=5; PROFILE_STEPS=5; else STEPS=300; PROFILE_STEPS=50; fi
RUN=("$PYTHON" -m replicate "device=$DEVICE" logger=none runtime.progress=false)

# 0. the package and its dependencies (offline from --wheels when given)
if [ -n "$WHEELS" ]; then
  part install 120 "$PYTHON" -m pip install --no-index --find-links "$WHEELS" -e ".[dev]"
elif ! "$PYTHON" -c "import replicate, hydra, wandb, scipy, mnist1d, pytest" 2>/dev/null; then
  part install 120 "$PYTHON" -m pip install -e ".[dev]"
fi

# 1. the machine
part environment 30 bash -c "nvidia-smi || true; \"$PYTHON\" -c 'import torch; print(torch.__version__, torch.version.cuda, \
torch.cuda.is_available(), torch.cuda.device_count(), torch.backends.cudnn.version()); \
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no GPU\")'"

# 2. every optimizer rule against the CPU, batched vs alone and device vs CPU in float64, the fp16
#    divergence case batched vs alone, fused kernels and the CUDA parts of the suite
part device_equality 150 env REPLICATE_TEST_DEVICE="$DEVICE" "$PYTHON" -m pytest -q -rs tests/test_gpu.py \
  tests/test_precision.py "tests/test_optim.py::test_every_optimizer_builds_and_steps_on_cuda_with_the_fused_kernels_this_torch_has" \
  --junitxml="$OUT/device_equality.xml"

# 3. the default entry, end to end
part default_entry 90 "${RUN[@]}" "hydra.run.dir=$OUT/runs/default" $([ "$DRY" -eq 1 ] && echo train.steps=$STEPS)

# 4. every catalog paper for a few hundred steps, two seeds
for config in conf/paper/*.yaml; do
  paper="$(basename "$config" .yaml)"
  part "paper_$paper" 60 "${RUN[@]}" "paper=$paper" seeds=2 "train.steps=$STEPS" "hydra.run.dir=$OUT/runs/$paper"
done

# 5. reduced precision, determinism and channels_last (a 2-D CNN for NHWC)
for setting in train.precision=bf16 train.precision=fp16 train.deterministic=true; do
  name="${setting#train.}"; name="${name/=/_}"  # precision_bf16: no "=" in a Hydra override's value
  part "mode_$name" 45 "${RUN[@]}" paper=mnist1d_cnn seeds=2 "train.steps=$STEPS" "$setting" "hydra.run.dir=$OUT/runs/$name"
done
part mode_channels_last 45 "${RUN[@]}" paper=sklearn_digits_constant model.name=cnn2d model.init=pytorch seeds=2 \
  "train.steps=$STEPS" train.channels_last=true train.precision=bf16 "hydra.run.dir=$OUT/runs/channels_last"

# 6. two processes: gloo on the CPU beside the GPU (equal to one process), and two ranks asking for one
#    GPU each on a machine with fewer GPUs: a one-line error from every rank, no hang
TORCHRUN=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 -m replicate logger=none
          runtime.progress=false paper=mnist1d_logistic seeds=2 "train.steps=$STEPS")
part two_process_gloo 120 "$PYTHON" -m pytest -q tests/test_distributed.py -k "torchrun or two_gloo or resume_false"
if [ "$DEVICE" = cuda ] && [ "$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')" -lt 2 ]; then
  part two_process_one_gpu 60 bash -c "! \"\$@\" 2> '$OUT/two_process_one_gpu.err' && \
grep -q 'error: torchrun started 2 processes on this machine but it has 1 CUDA device' '$OUT/two_process_one_gpu.err'" \
    _ "${TORCHRUN[@]}" device=cuda "hydra.run.dir=$OUT/runs/two_process_one_gpu"
else
  part two_process_device 90 "${TORCHRUN[@]}" "device=$DEVICE" "hydra.run.dir=$OUT/runs/two_process_device"
fi

# 7. a short profile: kernels and launch overhead per step of the default entry
part profile 60 "$PYTHON" scripts/gpu_profile.py "device=$DEVICE" "steps=$PROFILE_STEPS" "out=$OUT/profile"

# 8. the benchmark on the device
if [ "$DRY" -eq 1 ]; then BENCH=(mode=tiny); else BENCH=(); fi
part bench 300 bash -c "\"\$@\" > '$OUT/bench.json'" _ "$PYTHON" -m replicate.bench "device=$DEVICE" format=json "${BENCH[@]}"

echo "results: $OUT (summary.tsv: one line per part)"
column -t "$OUT/summary.tsv" 2>/dev/null || cat "$OUT/summary.tsv"
exit $FAILED
