"""Counter-based random integers on the device: a pure function of (seed, process, counter, position).

Each process draws only its own numbers, different from every other process's, without a generator whose
running state would have to be saved, shared or kept in step: the counter is a buffer of the method (saved
in checkpoints, so a resumed run draws what the uninterrupted run draws, and put back when a step is
skipped, so the step after a skipped one draws what it would have drawn had the skipped one never run).
The mixing function is SplitMix64's (Steele, Lea and Flood 2014, the seeding generator of java.util's
SplittableRandom and of xoshiro): in int64 tensor arithmetic, which wraps on overflow on every device and
under torch.compile, so it runs inside the compiled step without a host sync or a graph break.
"""
from __future__ import annotations

import torch


def _int64(x: int) -> int:
    """A 64-bit pattern as the int64 with the same bits."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


GOLDEN = 0x9E3779B97F4A7C15
MUL1, MUL2 = _int64(0xBF58476D1CE4E5B9), _int64(0x94D049BB133111EB)


def _mix_int(z: int) -> int:
    """SplitMix64's finaliser on a Python int (64-bit wrapping arithmetic, done by hand)."""
    z &= (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return z ^ (z >> 31)


def _shift_right(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical (unsigned) shift: torch's >> on int64 copies the sign bit."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix(z: torch.Tensor) -> torch.Tensor:
    """The same finaliser on int64 tensors (their multiplication wraps)."""
    z = (z ^ _shift_right(z, 30)) * MUL1
    z = (z ^ _shift_right(z, 27)) * MUL2
    return z ^ _shift_right(z, 31)


def random_below(high: torch.Tensor | int, shape: tuple[int, ...], seed: int, process: int,
                 counter: torch.Tensor) -> torch.Tensor:
    """int64 draws uniform in [0, high) (high broadcast against `shape`, at most 2^53), one stream per
    (seed, process) and a fresh block of it per counter value (a 0-d int64 tensor on the device).

    The (seed, process) key is mixed in Python: a constant that large, multiplied inside the graph, would
    overflow inductor's constant folding, which computes with unbounded integers; likewise the positions
    enter by addition only (inductor lowers arange to index arithmetic)."""
    stream = _int64(_mix_int(_mix_int(seed * GOLDEN + 1) + process * GOLDEN))
    key = mix(counter + stream)
    positions = torch.arange(torch.Size(shape).numel(), device=counter.device, dtype=torch.int64).view(shape)
    bits = mix(mix(key + positions))  # twice: consecutive inputs, well spread
    return _shift_right(bits, 11) % high  # 53 uniform bits: the modulo's bias is below high / 2^53
