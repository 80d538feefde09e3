"""What one small CUDA kernel launch and one GPU-to-CPU sync cost on this machine (token-by-token
generation with Hugging Face pays both on every token).

    python3 benchmarks/gpu/probe.py
"""

from __future__ import annotations

import time

import torch


def per_call_us(fn, count: int) -> float:
    fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(count):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    x = torch.ones(16, device="cuda")
    launch = per_call_us(lambda: x.add_(1), 5000)
    sync = per_call_us(lambda: x.sum().item(), 500)
    print(f"GPU probe: a small kernel launch {launch:.1f} us; launch + GPU-to-CPU sync {sync:.1f} us")


if __name__ == "__main__":
    main()
