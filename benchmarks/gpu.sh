#!/usr/bin/env bash
# The device table (Adam: updates.compile_step(mode="JAX"), the same with the gradients as device
# inputs, PyTensor's JAX mode, optax jitted with donation, torch fused; workloads big, many, tiny;
# then the start at P = 100 and 1000) on a GPU, in one prepared run of at most a few minutes.
#
#   bash benchmarks/gpu.sh [--quick] [--platform auto|gpu|cpu] [--budget S]
#   bash benchmarks/gpu.sh --fetch-wheels      # here, with PyPI: the wheels the GPU image lacks
#
# It first finds out what this machine has (a Python, JAX and its devices, torch with CUDA,
# optax, PyTensor, updates) and writes that to $OUT/gpu-preflight.txt; what is missing is
# recorded there and in the table as "not run", never a failure of the script. PyTensor and its
# pure-Python needs, absent from the GPU image, come from benchmarks/wheels/ when it was carried
# (filled by --fetch-wheels here). Then `run.py --only device --device-platform <platform>`
# under --budget; the table goes to $OUT/gpu.md and the JSON to $OUT/gpu.json (--quick:
# gpu-quick.*), the log to $OUT/gpu-log.txt. OUT defaults to benchmarks/results/gpu.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=$ROOT/benchmarks/wheels
# The wheels --fetch-wheels downloads: PyTensor at the version installed here and its needs that
# the GPU image (KINDS.md of the device tool) does not hold; numpy, scipy, numba, filelock,
# setuptools, toolz, multipledispatch and typing_extensions are there.
WHEEL_PACKAGES=(pytensor cons etuples logical-unification miniKanren)
WHEEL_PYTHON=${WHEEL_PYTHON:-3.12}  # the GPU image's python3 is 3.12

quick=0
platform=auto
budget=390  # seconds for run.py; the preflight and the wheels take under a minute more
fetch=0
usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --quick) quick=1 ;;
        --platform) platform=${2:?--platform needs auto, gpu or cpu}; shift ;;
        --budget) budget=${2:?--budget needs seconds}; shift ;;
        --fetch-wheels) fetch=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case $platform in auto | gpu | cpu) ;; *) echo "gpu.sh: --platform auto, gpu or cpu" >&2; exit 2 ;; esac

# A Python: $PYTHON, else the project's .venv when it runs here, else python3 (the GPU image's).
if [[ -n ${PYTHON:-} ]]; then
    py=$PYTHON
elif [[ -x $ROOT/.venv/bin/python ]] && "$ROOT/.venv/bin/python" -c "" 2>/dev/null; then
    py=$ROOT/.venv/bin/python
else
    py=python3
fi

if ((fetch)); then
    versions=()
    for package in "${WHEEL_PACKAGES[@]}"; do
        version=$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$package")
        versions+=("$package==$version")
    done
    mkdir -p "$WHEELS"
    rm -f "$WHEELS"/*.whl  # one version of each: pip installs none of two
    "$py" -m pip download --no-deps --only-binary=:all: --python-version "$WHEEL_PYTHON" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" "${versions[@]}"
    du -sh "$WHEELS"
    echo "carry benchmarks/wheels (ignored by benchmarks/.gitignore) to the GPU machine"
    exit 0
fi

OUT=${OUT:-$ROOT/benchmarks/results/gpu}
mkdir -p "$OUT"
name=gpu
if ((quick)); then name=gpu-quick; fi
preflight=$OUT/$name-preflight.txt
logfile=$OUT/$name-log.txt
export PYTHONUNBUFFERED=1
# updates from this working tree, installed or not
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

say() { echo "$*" | tee -a "$preflight"; }
# check NAME COMMAND...: run it (60 s at most), note its output, or its last line of error as missing
check() {
    local name=$1 output
    shift
    if output=$(timeout 60 "$@" 2>&1); then
        say "  ok       $name: $(echo "$output" | tail -n 3 | tr '\n' ' ')"
        return 0
    fi
    say "  MISSING  $name: $(echo "$output" | tail -n 1)"
    missing+=("$name")
    return 1
}

main() {
    missing=()
    : >"$preflight"
    say "gpu.sh preflight, $(date -u +%FT%TZ), $(uname -n)"
    say "  python   $py: $("$py" -c 'import sys; print(sys.version.split()[0])' 2>&1)"
    if command -v nvidia-smi >/dev/null; then
        check "nvidia-smi" nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    else
        say "  MISSING  nvidia-smi: not on the PATH"
        missing+=(nvidia-smi)
    fi

    # PyTensor (and updates with it) from the carried wheels when this Python lacks it.
    if ! "$py" -c "import pytensor" >/dev/null 2>&1; then
        if compgen -G "$WHEELS/*.whl" >/dev/null; then
            site=${TMPDIR:-/tmp}/updates-gpu-site
            if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$site" "$WHEELS"/*.whl >>"$preflight" 2>&1; then
                export PYTHONPATH=$site:$PYTHONPATH
                say "  wheels   installed into $site: $(cd "$WHEELS" && echo *.whl)"
            else
                say "  wheels   FAILED to install (pip's output is in $preflight)"
            fi
        else
            say "  wheels   none in benchmarks/wheels (bash benchmarks/gpu.sh --fetch-wheels here, then carry it)"
        fi
    fi

    check "jax-gpu" "$py" -c "import jax; print(jax.__version__, jax.devices('gpu'))" ||
        check "jax" "$py" -c "import jax; print(jax.__version__, jax.devices())" || true
    check "torch-cuda" "$py" -c "import torch; assert torch.cuda.is_available(), \
f'torch {torch.__version__} sees no CUDA device'; \
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" || true
    check "optax" "$py" -c "import optax; print(optax.__version__)" || true
    check "numba" "$py" -c "import numba; print(numba.__version__)" || true
    check "pytensor" "$py" -c "import pytensor; print(pytensor.__version__)" || true
    check "updates" "$py" -c "import updates; print(updates.__file__)" || true

    if [[ $platform == auto ]]; then
        platform=cpu
        if [[ " ${missing[*]} " != *" jax-gpu "* || " ${missing[*]} " != *" torch-cuda "* ]]; then
            platform=gpu
        fi
    fi
    say "  platform $platform; missing: ${missing[*]:-nothing}"

    arguments=(--only device --device-platform "$platform" --out "$OUT/$name.json" --time-budget "$budget")
    if ((quick)); then
        arguments+=(--quick --compile-timeout 120)
    else
        arguments+=(--compile-timeout 180)
    fi
    echo "== $py benchmarks/run.py ${arguments[*]}"
    status=0
    # The budget stops new measurements; timeout is the backstop (run.py ends its worker on SIGTERM).
    timeout --kill-after=15 $((budget + 45)) "$py" "$ROOT/benchmarks/run.py" "${arguments[@]}" >/dev/null || status=$?
    echo "== run.py exited with $status; the table ($OUT/$name.md):"
    cat "$OUT/$name.md" 2>/dev/null || echo "(no table written)"
    return "$status"
}

# Everything on the terminal (the device tool's output_tail) and in the log.
main 2>&1 | tee "$logfile"
