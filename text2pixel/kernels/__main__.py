"""``python -m text2pixel.kernels``: builds the fused pixel loop now (scripts/setup.sh runs it)."""

from text2pixel.kernels import build

print(build())
