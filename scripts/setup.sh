#!/usr/bin/env bash
# Create .venv with the exact locked dependency set (uv.lock), the project installed in it.
#
# uv is used because it resolves the registry's standard torch 2.13.0 build with torchvision
# 0.28.0 (pip may prefer a local '+cpu' torch build that torchvision's compiled ops cannot load).
# uv itself is installed into a private tool venv (.tools/), so nothing system-wide changes.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
if command -v uv >/dev/null 2>&1 && [ "$(uv --version | awk '{print $2}')" = "$UV_VERSION" ]; then
  UV=uv
else
  if [ ! -x .tools/bin/uv ]; then
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet "uv==${UV_VERSION}"
  fi
  UV=.tools/bin/uv
fi
"$UV" sync --locked --quiet --compile-bytecode  # .pyc up front: imports stay fast even under PYTHONDONTWRITEBYTECODE
.venv/bin/python - <<'PY'
import torch, torchvision
from torchvision.ops import nms
nms(torch.zeros(1, 4), torch.zeros(1), 0.5)  # fails loudly if torchvision's ops cannot load
print(f"groupdetr environment ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"CUDA {'available' if torch.cuda.is_available() else 'not available'}")
PY
