"""Decode-error forensics: a file that cannot be read or decoded stops iteration at once with an error
naming it (never a skip: that would change the epoch). DALI names the file for most failures of a file
read by `fn.io.file.read`; otherwise the samples that may have been in flight (the plan's step and the
steps DALI prefetched after it) are decoded again one by one to find it. `launch/check_dataset.py`
lists every bad file of a dataset with `find_undecodable`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np
from nvidia.dali import Pipeline, fn, types


def dali_reason(message: str) -> str:
    """The line of a DALI error that says what went wrong (after the operator's traceback)."""
    reason = message.split("encountered:")[-1].strip().splitlines()[0] if "encountered:" in message else message
    return re.sub(r"\s*sample #\d+ :\s*$", "", reason)  # external-source samples have no name to print


def name_bad_samples(message: str, suspects: Iterable[tuple[str, bytes]], threads: int) -> list[str]:
    """The suspects (name, encoded bytes) that DALI's message names, else those that do not decode."""
    suspects = list(suspects)
    named = [name for name, _ in suspects if name in message]
    return named or [name for name, _ in find_undecodable(suspects, threads)]


def explain(error: RuntimeError, suspects: Iterable[tuple[str, bytes]], threads: int, split: str, epoch: int,
            step: int) -> str:
    named = name_bad_samples(str(error), suspects, threads)
    where = ", ".join(named) or "not identified; `python launch/check_dataset.py ROOT` lists every bad file"
    return f"DALI {split} loader: cannot decode {where} (epoch {epoch}, step {step})\n  {dali_reason(str(error))}"


def read_files(paths: Iterable[str]):
    """(path, bytes or the OSError raised reading it)."""
    for path in paths:
        try:
            yield str(path), Path(path).read_bytes()
        except OSError as e:
            yield str(path), e


def _check_pipeline(batch_size: int, threads: int) -> Pipeline:
    pipe = Pipeline(batch_size=batch_size, num_threads=threads, device_id=None, prefetch_queue_depth=1,
                    exec_async=False, exec_pipelined=False)  # synchronous: a failure belongs to the batch just fed
    with pipe:
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        pipe.set_outputs(fn.decoders.image(encoded, device="cpu", output_type=types.RGB).shape())
    pipe.build()
    return pipe


def find_undecodable(items: Iterable[tuple[str, bytes | Exception]], threads: int = 2,
                     batch_size: int = 64) -> list[tuple[str, str]]:
    """(name, reason) for every item DALI's CPU decoder (the training decoder) cannot decode.

    Batches are decoded together; a failing batch is retried one sample at a time to name the culprits.
    """
    bad: list[tuple[str, str]] = []
    pipe = _check_pipeline(batch_size, threads)

    def check(batch):
        nonlocal pipe
        if not batch:
            return
        try:
            pipe.feed_input("encoded", [np.frombuffer(data, dtype=np.uint8) for _, data in batch])
            pipe.run()
            return
        except RuntimeError as e:  # the pipeline is dead after an error: make a new one
            pipe = _check_pipeline(batch_size, threads)
            if len(batch) == 1:
                bad.append((batch[0][0], dali_reason(str(e))))
                return
        for item in batch:
            check([item])

    batch = []
    for name, data in items:
        if isinstance(data, Exception):
            bad.append((name, f"cannot read: {data}"))
        elif len(data) == 0:
            bad.append((name, "empty file"))
        else:
            batch.append((name, data))
            if len(batch) == batch_size:
                check(batch)
                batch = []
    check(batch)
    return bad
