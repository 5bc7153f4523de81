#!/usr/bin/env bash
# The prepared GPU check: measure edgesplit on a machine with an NVIDIA GPU, in a fresh
# virtualenv, within a time budget, one `gpu_check: NAME = VALUE UNIT` line per figure.
# Run it by hand wherever such a machine is at hand and put its figures in
# docs/runtime.md ("GPU check"). It is never part of CI.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: benchmarks/gpu_check.sh [options]

On a machine with an NVIDIA GPU (nvidia-smi works), build a fresh virtualenv with
edgesplit[torch,gpu,ray] (onnxruntime-gpu alone, the CPU onnxruntime removed), then:
  1. probe which provider a session really takes for `cuda` and for `tensorrt,cuda`;
  2. `edgesplit profile --device cloud --quick` of the built-in model (untrained
     weights: the same latency, no training) and ResNet18 with --providers cuda,
     reporting the whole model's median and p95 and the provider really used;
  3. `edgesplit partition` ResNet18 (--providers cuda, every cut kept), serve it with
     `edgesplit cloud --providers cuda` and time cloud-only requests from a client:
     p50, p95, and the tail's compute time on the node;
  4. the same through the Ray tier: `edgesplit cloud --ray --replica-gpus 1`;
  5. the profiles of step 2 with --providers tensorrt,cuda, when ONNX Runtime's
     TensorRT provider loads (it needs TensorRT's libnvinfer); otherwise one line
     `gpu_check: tensorrt = not available (<reason>)`, and the rest goes on.
Each figure is one line `gpu_check: NAME = VALUE UNIT`, also appended to
WORK/figures.txt; each step's output is in WORK/logs/. Servers are stopped on exit.

Options:
  --work-dir DIR      logs, profiles, bundle, figures (default:
                      ${TMPDIR:-/tmp}/edgesplit-gpu-check)
  --venv DIR          the virtualenv to build (default: WORK/venv); one this script built
                      before from the same pyproject.toml and pip arguments is reused
  --reinstall         rebuild the virtualenv even when it is current
  --python PY         the interpreter to build it with (default: python3, >= 3.10)
  --pip-args "ARGS"   extra arguments for each pip install, e.g. "--find-links /wheels".
                      torch comes pinned (torch==2.14.1, torchvision==0.29.1) as for
                      `make install`; pip's own config (pip.conf, PIP_FIND_LINKS) still
                      applies, so local wheels are found where `make install` finds them.
                      torch only exports models here: where its CUDA differs from
                      onnxruntime-gpu's (the `torch` and `onnxruntime.built_for_cuda`
                      figures) and the CUDA provider does not load, a CPU torch avoids
                      the clash: "--extra-index-url https://download.pytorch.org/whl/cpu"
  --install-tensorrt  also pip install TensorRT (tensorrt-cu12, large) for the TensorRT
                      provider; without it a TensorRT already on the library path is used
  --requests N        timed cloud-only requests per node (default: 200, after 20 untimed)
  --budget-s S        time budget of the whole run, install included (default: 480); a
                      step that would pass it is cut short or skipped, and says so
  --dry-run           print the commands instead of running them (needs no GPU)
  -h, --help          this help

Exit status: 0 every figure measured (TensorRT not available counts as measured);
1 a step failed, timed out or was skipped; 2 no NVIDIA GPU here; 64 bad usage.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${TMPDIR:-/tmp}/edgesplit-gpu-check
VENV=""
REINSTALL=0
PYTHON=python3
PIP_EXTRA=()
INSTALL_TENSORRT=0
REQUESTS=200
BUDGET_S=480
DRY_RUN=0

die_usage() {
  echo "gpu_check.sh: $1 (see --help)" >&2
  exit 64
}

while (($#)); do
  case $1 in
    --work-dir) [[ $# -ge 2 ]] || die_usage "--work-dir needs a value"; WORK=$2; shift 2 ;;
    --venv) [[ $# -ge 2 ]] || die_usage "--venv needs a value"; VENV=$2; shift 2 ;;
    --reinstall) REINSTALL=1; shift ;;
    --python) [[ $# -ge 2 ]] || die_usage "--python needs a value"; PYTHON=$2; shift 2 ;;
    --pip-args)
      [[ $# -ge 2 ]] || die_usage "--pip-args needs a value"
      read -r -a PIP_EXTRA <<<"$2"
      shift 2
      ;;
    --install-tensorrt) INSTALL_TENSORRT=1; shift ;;
    --requests) [[ $# -ge 2 ]] || die_usage "--requests needs a value"; REQUESTS=$2; shift 2 ;;
    --budget-s) [[ $# -ge 2 ]] || die_usage "--budget-s needs a value"; BUDGET_S=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die_usage "unknown argument: $1" ;;
  esac
done
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || die_usage "--requests $REQUESTS: expected a whole number >= 1"
[[ $BUDGET_S =~ ^[1-9][0-9]*$ ]] || die_usage "--budget-s $BUDGET_S: expected whole seconds >= 1"
WORK=$(realpath -m "$WORK")
VENV=$(realpath -m "${VENV:-$WORK/venv}")
LOGS=$WORK/logs
FIGURES=$WORK/figures.txt
PY=$VENV/bin/python
EDGESPLIT=$VENV/bin/edgesplit
BUNDLE=$WORK/bundle-resnet18
STARTED=$(date +%s)
DEADLINE=$((STARTED + BUDGET_S))
FAILED=0
SERVER_PIDS=()
SERVER_PID=""
ENDPOINT=""

# figure NAME VALUE: one result line, on stdout and in WORK/figures.txt.
figure() {
  if ((DRY_RUN)); then
    printf 'gpu_check: %s = %s\n' "$1" "$2"
  else
    printf 'gpu_check: %s = %s\n' "$1" "$2" | tee -a "$FIGURES"
  fi
}

# show CMD...: the command as a shell would read it back (single quotes where needed).
show() {
  local arg words=()
  for arg; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      words+=("$arg")
    else
      words+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${words[*]}"
}

# budget_left LIMIT: the smaller of LIMIT and the seconds left of the budget (0: none).
budget_left() {
  local left=$((DEADLINE - $(date +%s)))
  ((left < 0)) && left=0
  ((left < $1)) && echo "$left" || echo "$1"
}

# last_line FILE: the last non-empty line of a log, for a one-line failure message.
last_line() {
  grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-300 || true
}

# within_budget NAME LIMIT: LIMIT cut to what is left of the budget, in LIMIT_LEFT; fails,
# with a figure line, when less than 5 s is left.
within_budget() {
  LIMIT_LEFT=$(budget_left "$2")
  if ((LIMIT_LEFT < 5)); then
    figure "$1" "skipped (the ${BUDGET_S} s budget is spent)"
    FAILED=1
    return 1
  fi
}

# outcome NAME LIMIT RC: a figure line saying why a step failed or timed out; returns RC.
outcome() {
  local name=$1 limit=$2 rc=$3
  if ((rc == 124 || rc == 137)); then
    figure "$name" "timed out after $limit s (log: $LOGS/$name.log)"
  elif ((rc != 0)); then
    figure "$name" "failed, exit $rc: $(last_line "$LOGS/$name.log") (log: $LOGS/$name.log)"
  fi
  ((rc == 0)) || FAILED=1
  return "$rc"
}

# step NAME LIMIT CMD...: run CMD within LIMIT seconds (and the budget), its output in
# WORK/logs/NAME.log. Fails, with a figure line saying why, when CMD fails, times out
# or the budget is spent.
step() {
  local name=$1 limit=$2
  shift 2
  if ((DRY_RUN)); then
    echo "dry-run: timeout $limit $(show "$@") > $(show "$LOGS/$name.log")"
    return 0
  fi
  within_budget "$name" "$limit" || return 1
  limit=$LIMIT_LEFT
  local rc=0
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  outcome "$name" "$limit" "$rc"
}

# measure NAME LIMIT ARGS...: `python -m benchmarks.gpu_check ARGS` within LIMIT seconds;
# its figure lines pass through, its messages go to WORK/logs/NAME.log.
measure() {
  local name=$1 limit=$2
  shift 2
  if ((DRY_RUN)); then
    echo "dry-run: timeout $limit $(show "$PY" -m benchmarks.gpu_check "$@")"
    return 0
  fi
  within_budget "$name" "$limit" || return 1
  limit=$LIMIT_LEFT
  local rc=0
  timeout --kill-after=10 "$limit" "$PY" -m benchmarks.gpu_check "$@" \
    2>"$LOGS/$name.log" | tee -a "$FIGURES" || rc=$?
  outcome "$name" "$limit" "$rc"
}

# serve NAME LIMIT CMD...: start `edgesplit cloud` CMD in a process group of its own and
# wait up to LIMIT seconds until it listens; its endpoint in ENDPOINT, its pid in
# SERVER_PID (and SERVER_PIDS, for the clean-up on exit).
serve() {
  local name=$1 limit=$2
  shift 2
  local ready=$WORK/$name.endpoint
  if ((DRY_RUN)); then
    echo "dry-run: $(show "$@" --ready-file "$ready") > $(show "$LOGS/$name.log") &"
    ENDPOINT=tcp://127.0.0.1:PORT
    SERVER_PID=PID
    return 0
  fi
  within_budget "$name" "$limit" || return 1
  limit=$LIMIT_LEFT
  rm -f "$ready"
  local began pid
  began=$(date +%s)
  # Wide lines: the start-up line names the provider, and rich wraps at 80 columns.
  COLUMNS=400 setsid "$@" --ready-file "$ready" >"$LOGS/$name.log" 2>&1 </dev/null &
  pid=$!
  SERVER_PID=$pid
  SERVER_PIDS+=("$pid")
  until [[ -s $ready ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      figure "$name" "failed: exited before listening: $(last_line "$LOGS/$name.log")"
      stop_server "$pid"
      FAILED=1
      return 1
    fi
    if (($(date +%s) - began >= limit)); then
      figure "$name" "failed: not listening after $limit s (log: $LOGS/$name.log)"
      stop_server "$pid"
      FAILED=1
      return 1
    fi
    sleep 0.5
  done
  ENDPOINT=$(<"$ready")
  figure "$name.startup" "$(($(date +%s) - began)) s"
}

# stop_server PID: SIGTERM (the node answers what it admitted, a local Ray cluster shuts
# down with it), then, after 30 s or once it is gone, its process group (what it left).
stop_server() {
  local pid=$1 i other kept=()
  if ((DRY_RUN)); then
    echo "dry-run: kill -TERM $pid; after 30 s: kill -KILL -- -$pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -TERM -- "-$pid" 2>/dev/null || true
  sleep 1
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # Forgotten once stopped: its number may be another process's later.
  for other in ${SERVER_PIDS[@]+"${SERVER_PIDS[@]}"}; do
    [[ $other == "$pid" ]] || kept+=("$other")
  done
  SERVER_PIDS=(${kept[@]+"${kept[@]}"})
}

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local pid
  for pid in ${SERVER_PIDS[@]+"${SERVER_PIDS[@]}"}; do
    stop_server "$pid"
  done
  SERVER_PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 0. An NVIDIA GPU, or nothing to do.
if ((DRY_RUN)); then
  echo "dry-run: nothing runs and no GPU is needed; a real run starts with"
  echo "dry-run: nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader" \
    "(exit 2 without an NVIDIA GPU)"
else
  gpu_error=""
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    gpu_error="nvidia-smi is not installed"
  elif ! gpus=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader 2>&1) || [[ -z $gpus ]]; then
    gpu_error="nvidia-smi failed: $(printf '%s' "${gpus:-no output}" | head -n 1)"
  fi
  if [[ -n $gpu_error ]]; then
    echo "gpu_check: no NVIDIA GPU here ($gpu_error): nothing measured." \
      "Run benchmarks/gpu_check.sh on a machine with an NVIDIA GPU and its driver." >&2
    exit 2
  fi
  for tool in timeout setsid; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "gpu_check: $tool is missing (coreutils/util-linux)" >&2
      exit 1
    }
  done
  mkdir -p "$LOGS"
  : >"$FIGURES"
  figure gpu "$(printf '%s' "$gpus" | paste -sd ';' -)"
fi
cd "$ROOT"

# 1. The virtualenv: edgesplit with the profiler (torch), the GPU build of ONNX Runtime
# and Ray. onnxruntime and onnxruntime-gpu install the same Python package and overwrite
# each other's files: both out, then the GPU one alone (its [cuda,cudnn] extras bring the
# CUDA and cuDNN libraries it was built for, where its version has them).
pip_install() {
  step "$1" "$2" "$PY" -m pip install --quiet --disable-pip-version-check "${@:3}" \
    ${PIP_EXTRA[@]+"${PIP_EXTRA[@]}"}
}
install_venv() {
  step venv 60 "$PYTHON" -m venv "$VENV" || return 1
  pip_install install-edgesplit 420 -e "${ROOT}[torch,gpu,ray]" || return 1
  step install-swap-onnxruntime 120 "$PY" -m pip uninstall --yes --quiet \
    onnxruntime onnxruntime-gpu || return 1
  pip_install install-onnxruntime-gpu 300 "onnxruntime-gpu[cuda,cudnn]>=1.17" || return 1
  if ((INSTALL_TENSORRT)); then
    pip_install install-tensorrt 300 tensorrt-cu12 || return 1
  fi
  ((DRY_RUN)) || touch "$STAMP"
}
stamp_key=$( (cat "$ROOT/pyproject.toml"; echo "${PIP_EXTRA[*]:-} trt=$INSTALL_TENSORRT") | cksum)
STAMP=$VENV/.gpu-check-${stamp_key%% *}
install_began=$(date +%s)
if ((!DRY_RUN && !REINSTALL)) && [[ -f $STAMP ]]; then
  figure install "reused $VENV"
else
  if ((!DRY_RUN)) && [[ -d $VENV ]]; then
    # Only a virtualenv this script built is replaced, never someone's own.
    if compgen -G "$VENV/.gpu-check-*" >/dev/null || [[ -z $(ls -A "$VENV") ]]; then
      rm -rf "$VENV"
    else
      figure install "refused: $VENV exists and this script did not build it (give another --venv)"
      exit 1
    fi
  fi
  if ! install_venv; then
    figure install "failed: nothing measured"
    exit 1
  fi
  ((DRY_RUN)) || figure install_time "$(($(date +%s) - install_began)) s"
fi

# The CUDA, cuDNN and TensorRT libraries of the NVIDIA pip packages, for every process
# here (a cloud node imports no torch, which would otherwise have loaded them).
if ((DRY_RUN)); then
  echo "dry-run: export LD_LIBRARY_PATH=\$($(show "$PY" -m benchmarks.gpu_check libpath)):..."
else
  libs=""
  if (($(budget_left 30) >= 5)); then
    libs=$(timeout "$(budget_left 30)" "$PY" -m benchmarks.gpu_check libpath \
      2>>"$LOGS/libpath.log" || true)
  fi
  [[ -z $libs ]] || export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
measure runtime 60 runtime || true

# 2. Which provider a session really takes (ONNX Runtime falls back quietly).
measure provider-cuda 60 providers cuda --label cuda || true
tensorrt_ok=1
if ! measure provider-tensorrt 120 providers tensorrt,cuda --label tensorrt; then
  tensorrt_ok=0 # its line says why
elif ((!DRY_RUN)) && ! grep -q '^gpu_check: provider.tensorrt = TensorrtExecutionProvider$' \
  "$FIGURES"; then
  tensorrt_ok=0
  grep -q '^gpu_check: tensorrt = not available' "$FIGURES" ||
    figure tensorrt "not available (see $LOGS/provider-tensorrt.log)"
fi

# profile_model MODEL LABEL PROVIDERS LIMIT [FLAGS...]: a quick cloud-side profile, then
# its provider and latency.
profile_model() {
  local model=$1 label=$2 providers=$3 limit=$4
  shift 4
  local out=$WORK/profile-$label.json
  if step "profile-$label" "$limit" "$EDGESPLIT" profile --model "$model" --device cloud \
    --quick --no-layers --providers "$providers" --out "$out" "$@"; then
    measure "profile-$label-figures" 60 profile "$out" --label "$label" || true
  fi
}

profile_model branchynet-untrained builtin.cuda cuda 90
profile_model resnet18 resnet18.cuda cuda 150

# 3. The cloud node on the GPU: cloud-only requests of ResNet18 (the whole model as tail).
# cloud_figures NAME LIMIT FLAGS...: serve the bundle with FLAGS (listening within LIMIT
# seconds), time cloud-only requests, stop it.
cloud_figures() {
  local name=$1 limit=$2
  shift 2
  if serve "$name" "$limit" "$EDGESPLIT" cloud --bundle "$BUNDLE" --bind 'tcp://127.0.0.1:*' \
    --insecure "$@"; then
    measure "$name-requests" 180 cloud "$ENDPOINT" --bundle "$BUNDLE" \
      --log "$LOGS/$name.log" --label "$name" --requests "$REQUESTS" --warmup 20 || true
    stop_server "$SERVER_PID"
  fi
}

if step partition-resnet18 180 "$EDGESPLIT" partition --model resnet18 --out "$BUNDLE" \
  --quick --no-prune --providers cuda; then
  cloud_figures cloud.onnxruntime 120 --providers cuda
  # 4. The Ray tier: a local Ray cluster, one replica holding the GPU.
  cloud_figures cloud.ray 240 --providers cuda --ray --replica-gpus 1 --replica-cpus 1 \
    --min-replicas 1 --max-replicas 1
fi

# 5. TensorRT last: it builds an engine per sub-model (slow the first time; cached).
if ((tensorrt_ok)); then
  engines=$WORK/tensorrt-engines
  ((DRY_RUN)) || mkdir -p "$engines"
  profile_model branchynet-untrained builtin.tensorrt tensorrt,cuda 150 --engine-cache "$engines"
  profile_model resnet18 resnet18.tensorrt tensorrt,cuda 240 --engine-cache "$engines"
else
  figure profile.tensorrt "skipped (tensorrt not available or not probed)"
fi

((DRY_RUN)) || figure total_time "$(($(date +%s) - STARTED)) s"
exit "$FAILED"
