"""Every kernels.*_loss with a Triton module compiles with fullgraph=True (aot_eager, CPU, interpreter)
and its compiled forward/backward match eager. The trainer compiles its step, so a graph break here
would be an error there."""
import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.backends.registry import lookup_backend

import kernels
from kernels._build import available_modules


def _inputs(name):
    """Tiny inputs in the shape each loss takes; the tensors that train require grad."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    if name == "kd":
        return [rand(3, 10).requires_grad_(), rand(3, 10)], {"temperature": 4.0}
    if name == "dkd":
        return [rand(3, 10).requires_grad_(), rand(3, 10).requires_grad_(), rand(3, 10), rand(3, 10)], {"temperature": 4.0}
    if name == "icd":
        z_s, z_t = (F.normalize(rand(8, 16), dim=1).requires_grad_() for _ in range(2))
        return [z_s, z_t, torch.tensor(1.0, requires_grad=True), torch.tensor(0.0, requires_grad=True)], {}
    if name == "ccd":
        return [rand(8, 16).requires_grad_(), rand(8, 16)], {}
    raise KeyError(name)


class _AotEagerRecording:
    """The aot_eager backend, noting the ops in the graph dynamo hands it."""

    def __init__(self):
        self.targets = []

    def __call__(self, gm, example_inputs):
        self.targets += [str(node.target) for node in gm.graph.nodes if node.op == "call_function"]
        return lookup_backend("aot_eager")(gm, example_inputs)


@pytest.mark.parametrize("name", available_modules())
def test_loss_compiles_fullgraph_and_matches_eager(name, backend):
    backend("triton")
    loss_fn = getattr(kernels, f"{name}_loss")

    def step(*args, **kwargs):
        return 1.5 * loss_fn(*args, **kwargs)  # a weighted term, as in the trainer: grad_output != 1

    args, kwargs = _inputs(name)
    trained = [a for a in args if a.requires_grad]
    eager = step(*args, **kwargs)
    eager_grads = torch.autograd.grad(eager, trained)

    torch._dynamo.reset()
    aot_eager = _AotEagerRecording()
    compiled_step = torch.compile(step, fullgraph=True, backend=aot_eager)
    out = compiled_step(*args, **kwargs)
    grads = torch.autograd.grad(out, trained)
    assert any(f"kernels.{name}_loss" in t for t in aot_eager.targets), aot_eager.targets  # the Triton op, not the reference
    torch.testing.assert_close(out, eager)
    for g, e in zip(grads, eager_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, e)
