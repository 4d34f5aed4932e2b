"""Methods with state or gathering across processes, by value: one step on 2 processes (a real `accelerate
launch`, DDP as the Trainer wraps it) equals one step in one process on the concatenated batch.

- icd with `icd.negatives: global`: every rank's ICD term IS the one-process term on all 8 images (the
  gathered similarity matrix), and after DDP's average every gradient equals the one-process gradient.
- slkd (its two SL teachers train inside the DDP-wrapped module; `detach: false` lets the student's loss
  reach them): each rank's terms are means over its half, so their average over ranks is the one-process
  term, and every gradient (student, SL teachers, heads) equals the one-process gradient.
A gradient that skips DDP's reduction, a gather without a backward, or an SL teacher left out of the wrapped
module gives a different number here. (CRD's cross-process state is tested in its own file.)
"""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
import two_vs_one_probe as probe  # noqa: E402
from tests.conftest import accelerate_launch  # noqa: E402

pytestmark = pytest.mark.xdist_group("two_vs_one")


@pytest.fixture(scope="module")
def two_process_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_vs_one")
    accelerate_launch([str(Path(probe.__file__)), str(out)], processes=2, timeout=300)
    return {m: [torch.load(out / f"{m}-rank{r}.pt") for r in range(probe.WORLD)] for m in probe.METHODS}


@pytest.mark.parametrize("method", sorted(probe.METHODS))
def test_two_processes_equal_one_process_on_the_concatenated_batch(two_process_records, method):
    module = probe.build(method)
    one = probe.one_step(module, module, slice(None), lambda loss: loss.backward())
    ranks = two_process_records[method]
    assert set(ranks[0]["terms"]) == set(one["terms"])
    for name, value in one["terms"].items():
        per_rank = [r["terms"][name] for r in ranks]
        if method == "icd" and name == "icd":
            for v in per_rank:  # the global-batch loss on every rank, not a mean of halves
                torch.testing.assert_close(v, value, rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(torch.stack(per_rank).mean(), value, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(per_rank[0], per_rank[1])  # the halves differ: the test can tell them apart
    assert set(ranks[0]["grads"]) == set(one["grads"]) and len(one["grads"]) > 10
    for name, grad in one["grads"].items():
        for r in ranks:
            torch.testing.assert_close(r["grads"][name], grad, rtol=2e-4, atol=1e-6, msg=f"{method}: {name}")
    if method == "slkd":  # the SL teachers get the student's gradient too (detach: false) and train
        assert any(n.startswith("methods.0.sl1.") and g.abs().sum() > 0 for n, g in one["grads"].items())
