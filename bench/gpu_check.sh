#!/usr/bin/env bash
# The one prepared check for the device tool (an H200 machine, no network): the smoke pipeline on
# CUDA in bfloat16 with a ~0.5B Qwen2-shaped random model (bench/gpu_check.py), well under 8 minutes.
#
# The machine's python3 has torch, transformers, accelerate, peft, pandas, pyarrow and tokenizers,
# but not prefect, mlflow, trl, datasets or pandera: bench/gpu_wheels.sh downloads those (and what
# they need that the image lacks) into .whl/ here; name .whl in the run's carry. alignflow itself
# is laid out under /tmp/alignflow as it installs (flows/, tasks/, schemas/ inside the package).
#
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
site=/tmp/alignflow-site
rm -rf "$site" && mkdir -p "$site"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
fi
cp -r alignflow "$site/alignflow"
for part in flows tasks schemas; do cp -r "$part" "$site/alignflow/$part"; done
export PYTHONPATH="$site" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout 480 python3 bench/gpu_check.py --size "${SIZE:-qwen-0.5b}" --device "${DEVICE:-cuda}" --dtype "${DTYPE:-bfloat16}"
