"""Every registered method and alias (and a few combinations), like timm's test_models: one training
step of the Distiller is finite and reaches every parameter; the optimizer groups are right; the
state a method owns survives a state_dict round trip."""
import pytest
import torch

from method_fixtures import SPECS, build_distiller, make_batch, make_config
from pipeline.batch import plan_batch
from pipeline.methods import METHODS
from pipeline.methods.icd import ICD
from pipeline.optim import create_optimizer


def exact_zero_gradients(model) -> set[str]:
    """ICD's b cancels in every softmax: its gradient is zero by construction (tests/methods/test_losses.py)."""
    return {f"methods.{i}.bias" for i, m in enumerate(model.methods) if isinstance(m, ICD)}


def optimizer_for(cfg, model) -> torch.optim.Optimizer:
    return create_optimizer(model, cfg.train, plan_batch(cfg.train, processes=1).lr)


def train_steps(cfg, model, steps=2):
    optimizer = optimizer_for(cfg, model)
    model.train()
    for step in range(steps):
        terms = model(**make_batch(cfg.method, seed=step))
        optimizer.zero_grad()
        sum(terms.values()).backward()
        optimizer.step()


def test_specs_cover_the_registry():
    assert set(METHODS) <= {n for s in SPECS for n in s.split("+")}


@pytest.mark.parametrize("spec", SPECS)
def test_step_is_finite_and_reaches_every_parameter(spec):
    model = build_distiller(make_config(spec)).train()
    terms = model(**make_batch(spec))
    assert "ce" in terms
    assert len(terms) > 1 or spec == "none"
    for name, value in terms.items():
        assert value.ndim == 0 and torch.isfinite(value), (name, value)
    sum(terms.values()).backward()
    zero_ok = exact_zero_gradients(model)
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient (DDP would fail on an unused parameter)"
        assert torch.isfinite(p.grad).all(), name
    # Each part of the student and of every method learns. (Per part, not per tensor: timm zero-initialises
    # each residual branch's last BN, so the branch's other weights start with zero gradient.)
    parts = [("student", model.student)] + [(f"methods.{i}.{n}", c) for i, m in enumerate(model.methods)
                                             for n, c in m.named_children()]
    parts += [(f"methods.{i}.{n}", p) for i, m in enumerate(model.methods)
              for n, p in m.named_parameters(recurse=False)]
    for name, part in parts:
        params = [part] if isinstance(part, torch.nn.Parameter) else list(part.parameters())
        if name not in zero_ok:
            assert any(p.grad.abs().sum() > 0 for p in params), f"{name} has an all-zero gradient"


def decays_by_module_type(model) -> dict[str, bool]:
    """Whether each parameter should decay, from the kind of layer that owns it (not from the rule the
    trainer uses, parameter ndim): convolution and linear weights decay; biases, norm layers and bare
    method parameters (ICD's tau and b) do not."""
    expected = {}
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            expected[full] = isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and name == "weight"
    return expected


@pytest.mark.parametrize("spec", SPECS)
def test_optimizer_groups(spec):
    cfg = make_config(spec)
    model = build_distiller(cfg)
    optimizer = optimizer_for(cfg, model)
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(names.values())  # every parameter exactly once
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    expected = decays_by_module_type(model)
    assert set(expected) == set(names.values())
    for name, should_decay in expected.items():
        assert (name in decayed) == should_decay, name
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, cfg.train.weight_decay}
    for i, m in enumerate(model.methods):
        if isinstance(m, ICD):
            assert {f"methods.{i}.log_scale", f"methods.{i}.bias"}.isdisjoint(decayed)


# The state the methods own, by the names the checkpoint stores.
OWNED_STATE = {"icd": ["log_scale", "bias", "head_s.weight", "head_t.weight"],
               "ccd": ["transform.0.weight", "transform.1.running_mean", "transform.3.weight"],
               "crd": ["bank_s", "bank_t", "z", "embed_s.weight", "embed_t.weight"],
               "slkd": ["sl1.model.conv1.0.weight", "sl2.model.fc.weight", "sl1.model.bn1.running_var"]}


@pytest.mark.parametrize("spec", SPECS)
def test_state_round_trip(spec):
    """Train a little, load the state into a differently initialised copy: it then behaves identically."""
    cfg = make_config(spec)
    trained = build_distiller(cfg, seed=0)
    train_steps(cfg, trained)
    state = trained.state_dict()
    for i, m in enumerate(trained.methods):
        for key in OWNED_STATE.get(m.name, []):
            assert f"methods.{i}.{key}" in state, f"{m.name}: {key} is not in the state_dict"
    fresh = build_distiller(cfg, seed=1)
    method_keys = [k for k in state if k.startswith("methods.")]
    if method_keys:  # the copy starts elsewhere, so the comparison below means something
        assert any(not torch.equal(fresh.state_dict()[k], state[k]) for k in method_keys)
    fresh.load_state_dict(state)
    batch = make_batch(spec, seed=7)
    outputs = []
    for model in (trained, fresh):
        torch.manual_seed(3)  # CRD draws its negatives from the global RNG
        outputs.append({k: v.detach() for k, v in model.train()(**batch).items()})
        model.eval()
        for name, net in [("student", model.student)] + [x for m in model.methods for x in m.extra_networks().items()]:
            outputs[-1][f"eval/{name}"] = net(batch["images"])[0].detach()
    assert outputs[0].keys() == outputs[1].keys()
    for key in outputs[0]:
        assert torch.equal(outputs[0][key], outputs[1][key]), key
