"""pipeline/nonfinite.py on tiny tensors, by hand: the record names the FIRST bad step of several between
reads and its non-finite terms, a read with nothing recorded, every later step flagged without
skip_nonfinite; BufferSnapshot puts back exactly the buffers it was given (not the excluded ones) where a
step is skipped and keeps the step's values where it is not."""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.nonfinite import BufferSnapshot, NonFiniteSteps


def step(record: NonFiniteSteps, param: nn.Parameter, grad: float, terms: dict[str, float], number: int) -> bool:
    param.grad = torch.full_like(param, 1.0)
    param.grad[1] = grad  # one element: a finite loss with one non-finite gradient entry counts too
    return bool(record.check({k: torch.tensor(v) for k, v in terms.items()}, number))


def test_the_first_bad_step_of_several_between_reads_is_named():
    p = nn.Parameter(torch.zeros(3))
    record = NonFiniteSteps([p], skip_nonfinite=True)
    assert record.read() is None  # nothing checked yet
    flags = [step(record, p, 0.5, {"ce": 1.0, "kd": 2.0}, 10),
             step(record, p, math.nan, {"ce": 1.0, "kd": math.nan}, 11),
             step(record, p, 0.5, {"ce": 1.0, "kd": 2.0}, 12),
             step(record, p, math.inf, {"ce": math.inf, "kd": 2.0}, 13),
             step(record, p, 0.5, {"ce": 1.0, "kd": 2.0}, 14)]
    assert flags == [False, True, False, True, False]  # skipping: a good step after a bad one trains
    assert record.read() == (2, 11, ["kd"])  # two bad steps since the read; the first was 11, its kd term NaN
    assert record.read() is None  # the read starts the count afresh
    assert step(record, p, math.nan, {"ce": math.nan, "kd": 2.0}, 20)
    assert record.read() == (1, 20, ["ce"])


def test_without_skipping_every_step_after_a_bad_one_is_flagged_until_the_read():
    p = nn.Parameter(torch.zeros(3))
    record = NonFiniteSteps([p], skip_nonfinite=False)
    flags = [step(record, p, g, {"ce": 1.0}, n) for n, g in enumerate([0.5, math.nan, 0.5, 0.5])]
    assert flags == [False, True, True, True]
    assert record.read() == (3, 1, [])  # the loss itself was finite: no term is named
    assert not step(record, p, 0.5, {"ce": 1.0}, 9) and record.read() is None


class Module(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([1.0, 2.0]))
        self.register_buffer("count", torch.tensor(3))
        self.register_buffer("bank", torch.tensor([5.0, 6.0, 7.0]))  # a large buffer its method restores itself
        self.register_buffer("empty", torch.zeros(0))


def test_buffers_go_back_only_where_the_step_is_skipped_and_only_the_snapshot_ones():
    m = Module()
    snapshot = BufferSnapshot(m, exclude={"bank"})
    for skipped in (True, False):
        m.mean.copy_(torch.tensor([1.0, 2.0])), m.count.fill_(3), m.bank.copy_(torch.tensor([5.0, 6.0, 7.0]))
        snapshot.take()
        m.mean.copy_(torch.tensor([math.nan, 4.0])), m.count.add_(1), m.bank.fill_(0.0)  # what the forward moved
        snapshot.restore_if(torch.tensor(skipped))
        assert m.bank.tolist() == [0.0, 0.0, 0.0]  # excluded: left to its method either way
        if skipped:
            assert m.mean.tolist() == [1.0, 2.0] and int(m.count) == 3
        else:
            assert math.isnan(m.mean[0]) and m.mean[1] == 4.0 and int(m.count) == 4
    assert m.count.dtype == torch.int64 and m.empty.numel() == 0
