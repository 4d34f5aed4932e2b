"""Two real gloo processes: CRD keeps identical memory banks on every rank and, given the negatives each
process drew, gives the Z, banks and loss of one process on the concatenated batch (both sampling modes);
ICD's global negatives equal single-device ICD on the concatenated batch, in value and (after DDP's
average) in gradient."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from method_fixtures import NUM_SAMPLES, TEACHER_DIM, build_distiller, make_config
from pipeline.methods import NetOutput, Outputs

WORLD, B, D_S = 2, 4, 512


def global_batch(seed: int) -> dict:
    """What all ranks together see in one step; rank r takes rows [r * B, (r + 1) * B)."""
    gen = torch.Generator().manual_seed(seed)
    n = WORLD * B
    return {"index": torch.randperm(NUM_SAMPLES, generator=gen)[:n], "f_s": torch.randn(n, D_S, generator=gen),
            "f_t": torch.randn(n, TEACHER_DIM, generator=gen).relu(), "labels": torch.zeros(n, dtype=torch.long)}


def outputs(batch: dict, rows: slice) -> Outputs:
    n = batch["f_s"][rows].shape[0]
    dummy = torch.zeros(n, 10)
    return Outputs(images=torch.zeros(n, 3, 1, 1), labels=batch["labels"][rows], views=1,
                   student=NetOutput(dummy, batch["f_s"][rows]), teacher=NetOutput(dummy, batch["f_t"][rows]),
                   index=batch["index"][rows])


def shared_reference(batch: dict, negatives: list[torch.Tensor]):
    """Float64: Z (pooled over every anchor's positive and kept negatives, x N), the weighted mean NCE loss
    over all anchors (anchor i of rank r against rank r's negatives, same-class ones left out) and the banks
    after the momentum-0.5 update of the batch's rows."""
    crd = build_distiller(make_config("crd", crd={"nce_k": 24, "shared_negatives": True}), seed=0).methods[0]
    with torch.no_grad():
        v_s = F.normalize(crd.embed_s(batch["f_s"]).double(), dim=1)
        v_t = F.normalize(crd.embed_t(batch["f_t"]).double(), dim=1)
    bank_s, bank_t, labels, index = crd.bank_s.double(), crd.bank_t.double(), crd.class_of, batch["index"]
    scores, keeps = [], []
    for i in range(WORLD * B):
        neg = negatives[i // B]
        keep = labels[neg] != labels[index[i]]
        for v, bank in ((v_s, bank_t), (v_t, bank_s)):
            scores.append(torch.exp(torch.cat([bank[index[i]][None], bank[neg]]) @ v[i] / 0.07))
        keeps += [keep, keep]
    def pooled_z(direction: int) -> torch.Tensor:  # direction 0: student vs teacher bank; 1: the reverse
        pairs = zip(scores[direction::2], keeps[direction::2])
        return torch.cat([torch.cat([e[:1], e[1:][k]]) for e, k in pairs]).mean() * NUM_SAMPLES
    z_s, z_t = pooled_z(0), pooled_z(1)
    m = 24 / NUM_SAMPLES  # K Pn with the nominal K
    total = 0.0
    for j, (e, keep) in enumerate(zip(scores, keeps)):
        p = e / (z_s if j % 2 == 0 else z_t)
        total = total + torch.log(p[0] / (p[0] + m)) + torch.log(m / (p[1:][keep] + m)).sum()
    new_s, new_t = bank_s.clone(), bank_t.clone()
    new_s[index] = F.normalize(0.5 * bank_s[index] + 0.5 * v_s, dim=1)
    new_t[index] = F.normalize(0.5 * bank_t[index] + 0.5 * v_t, dim=1)
    return torch.stack([z_s, z_t]), -0.8 * total / (WORLD * B), (new_s.float(), new_t.float())  # crd.weight 0.8


def worker(rank: int, port: int, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    mine = slice(rank * B, (rank + 1) * B)
    record = {}

    # CRD: two steps on different local batches; every rank's banks must follow the global update.
    crd = build_distiller(make_config("crd", crd={"nce_k": 24, "momentum": 0.3}), seed=0).methods[0]
    torch.manual_seed(0)  # the same global RNG on every rank, as set_seed gives it: the draws must differ anyway
    record["contrast"] = crd.sample_contrast(torch.zeros(B, dtype=torch.long))
    record["banks"] = [(crd.bank_s.clone(), crd.bank_t.clone())]
    for step in range(2):
        batch = global_batch(step)
        crd(outputs(batch, mine))
        record["banks"].append((crd.bank_s.clone(), crd.bank_t.clone()))
        record[f"batch{step}"] = batch
    record["crd_embed"] = (crd.embed_s.state_dict(), crd.embed_t.state_dict())
    record["z"] = crd.z.clone()

    # CRD by value, both modes: one step; each rank's negatives recorded as drawn.
    for shared in (False, True):
        crd = build_distiller(make_config("crd", crd={"nce_k": 24, "shared_negatives": shared}), seed=0).methods[0]
        drawn = {}
        sampler = "sample_shared" if shared else "sample_contrast"
        draw = getattr(crd, sampler)
        setattr(crd, sampler, lambda *a: drawn.setdefault("negatives", draw(*a)))
        loss = crd(outputs(global_batch(20), mine))["crd"]
        record[f"crd_shared{shared}"] = {"negatives": drawn["negatives"], "loss": loss.detach(), "z": crd.z.clone(),
                                         "banks": (crd.bank_s.clone(), crd.bank_t.clone())}

    # ICD with global negatives: the same loss everywhere; DDP averages the gradients.
    icd = build_distiller(make_config("icd", icd={"negatives": "global"}), seed=0).methods[0]
    batch = global_batch(10)
    loss = icd(outputs(batch, mine))["icd"]
    loss.backward()
    grads = {}
    for name, p in icd.named_parameters():
        dist.all_reduce(p.grad)
        grads[name] = p.grad / WORLD
    record.update(icd_loss=loss.detach(), icd_grads=grads)
    torch.save(record, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]

    # CRD: identical banks and Z on both ranks, equal to the update with all ranks' samples.
    crd = build_distiller(make_config("crd", crd={"nce_k": 24, "momentum": 0.3}), seed=0).methods[0]
    crd.embed_s.load_state_dict(ranks[0]["crd_embed"][0])
    crd.embed_t.load_state_dict(ranks[0]["crd_embed"][1])
    for step in range(2):
        for bank in range(2):
            assert torch.equal(ranks[0]["banks"][step + 1][bank], ranks[1]["banks"][step + 1][bank])
        batch = ranks[0][f"batch{step}"]
        old_s, old_t = ranks[0]["banks"][step]
        new_s, new_t = ranks[0]["banks"][step + 1]
        index = batch["index"]
        with torch.no_grad():  # the embedding heads do not change in this test (no optimizer step)
            v_s = F.normalize(crd.embed_s(batch["f_s"]), dim=1)
            v_t = F.normalize(crd.embed_t(batch["f_t"]), dim=1)
        assert torch.allclose(new_s[index], F.normalize(0.3 * old_s[index] + 0.7 * v_s, dim=1), atol=1e-6)
        assert torch.allclose(new_t[index], F.normalize(0.3 * old_t[index] + 0.7 * v_t, dim=1), atol=1e-6)
    assert torch.equal(ranks[0]["z"], ranks[1]["z"]) and (ranks[0]["z"] > 0).all()
    assert not torch.equal(ranks[0]["contrast"][:, 1:], ranks[1]["contrast"][:, 1:])  # each rank its own negatives

    # CRD, official negatives: one process on the concatenated batch, drawing what the two drew.
    batch = global_batch(20)
    one = build_distiller(make_config("crd", crd={"nce_k": 24}), seed=0).methods[0]
    runs = [r["crd_sharedFalse"] for r in ranks]
    assert not torch.equal(runs[0]["negatives"][:, 1:], runs[1]["negatives"][:, 1:])
    one.sample_contrast = lambda index: torch.cat([r["negatives"] for r in runs])
    loss = one(outputs(batch, slice(None)))["crd"]
    for r in runs:
        torch.testing.assert_close(r["z"], one.z, rtol=1e-6, atol=0)
        torch.testing.assert_close(r["banks"], (one.bank_s, one.bank_t), rtol=0, atol=1e-7)
    # each rank's loss is the mean over its B anchors; one process's, over all 2B: their mean
    torch.testing.assert_close((runs[0]["loss"] + runs[1]["loss"]) / 2, loss.detach(), rtol=1e-5, atol=0)

    # CRD, shared negatives: each rank's K draws serve its own anchors only, which no single shared draw
    # reproduces, so the one-process reference is the formula in float64 on the concatenated batch.
    runs = [r["crd_sharedTrue"] for r in ranks]
    assert not torch.equal(runs[0]["negatives"], runs[1]["negatives"])
    z, expected, banks = shared_reference(batch, [r["negatives"] for r in runs])
    for r in runs:
        torch.testing.assert_close(r["z"].double(), z, rtol=1e-5, atol=0)
        torch.testing.assert_close(r["banks"], banks, rtol=0, atol=1e-6)
    torch.testing.assert_close((runs[0]["loss"] + runs[1]["loss"]).double() / 2, expected, rtol=1e-5, atol=0)

    # ICD global negatives == single-device ICD on the whole batch.
    icd = build_distiller(make_config("icd"), seed=0).methods[0]
    batch = global_batch(10)  # the batch the workers split
    loss = icd(outputs(batch, slice(None)))["icd"]
    loss.backward()
    for r in ranks:
        assert torch.allclose(r["icd_loss"], loss.detach(), rtol=1e-5)
        for name, p in icd.named_parameters():
            assert torch.allclose(r["icd_grads"][name], p.grad, rtol=1e-4, atol=1e-7), name
