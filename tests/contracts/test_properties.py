"""Properties (hypothesis) where the contract is one: sharding plans for any size, world, batch and drop rule;
file-list and webdataset parsing round-trips with awkward names; validation counts against brute force;
config -> resolved YAML -> config."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from pipeline.config import Config, apply, keys, load_yaml, nest, to_dict, to_yaml
from pipeline.data.filelist import read_file_list, read_file_lists
from pipeline.data.sharding import train_indices, train_steps, val_indices
from pipeline.data.webdataset import list_shards, read_samples
from pipeline.metrics import count_hits, real_label_table

# ---------------------------------------------------------------- sharding
sizes = st.integers(1, 300)
worlds = st.integers(1, 8)
batches = st.integers(1, 40)


@given(n=sizes, world=worlds, batch=batches, seed=st.integers(0, 2**31), epoch=st.integers(0, 1000))
def test_train_plan_every_sample_at_most_once_with_the_fewest_dropped(n, world, batch, seed, epoch):
    plans = [train_indices(n, batch, r, world, seed, epoch) for r in range(world)]
    steps = max(s for s in range(n + 1) if s * batch * world <= n)  # brute force: whole global batches only
    assert train_steps(n, batch, world) == steps
    for plan in plans:
        assert plan.shape == (steps, batch) and plan.dtype.kind == "i"
    used = np.concatenate([p.ravel() for p in plans])
    assert len(np.unique(used)) == used.size == steps * batch * world  # never twice in an epoch
    assert ((used >= 0) & (used < n)).all()
    # The same plan again (replay), a different one next epoch when there is anything to reorder.
    assert all(np.array_equal(p, train_indices(n, batch, r, world, seed, epoch)) for r, p in enumerate(plans))
    if steps * batch * world >= 20:
        again = np.concatenate([train_indices(n, batch, r, world, seed, epoch + 1).ravel() for r in range(world)])
        assert not np.array_equal(used, again)


@given(n=st.integers(2, 200), world=worlds, seed=st.integers(0, 2**31))
def test_train_plan_batch_one_uses_every_sample_when_it_divides(n, world, seed):
    n = n - n % world or world
    used = np.concatenate([train_indices(n, 1, r, world, seed, 0).ravel() for r in range(world)])
    assert sorted(used.tolist()) == list(range(n))


@given(n=sizes, world=worlds, batch=batches)
def test_val_plan_every_sample_exactly_once_padding_masked(n, world, batch):
    plans = [val_indices(n, batch, r, world) for r in range(world)]
    mine = [[i for i in range(n) if i % world == r] for r in range(world)]  # rank r: r, r + world, ...
    steps = -(-max(len(m) for m in mine) // batch)
    for r, (idx, valid) in enumerate(plans):
        assert idx.shape == valid.shape == (steps, batch)  # equal steps on every rank
        assert idx[valid].tolist() == mine[r]  # in order
        assert ((idx >= 0) & (idx < n)).all()  # padding reads a real sample (masked)
        assert not valid.ravel()[len(mine[r]):].any() and valid.ravel()[:len(mine[r])].all()
    counted = sorted(i for idx, valid in plans for i in idx[valid].tolist())
    assert counted == list(range(n))


# ---------------------------------------------------------------- file lists
# Names as people make them: spaces inside, dots, unicode; never a line break nor edge whitespace.
name_chars = st.sampled_from(list("abcXYZ019 ._-()+,&'é漢ÿØ"))
names = st.text(name_chars, min_size=1, max_size=20).map(str.strip).filter(bool)
paths = st.lists(names, min_size=1, max_size=3).map("/".join)


@given(rows=st.lists(st.tuples(paths, st.integers(0, 6)), min_size=1, max_size=30),
       keep=st.integers(0, 5), blanks=st.lists(st.integers(0, 30), max_size=4))
def test_file_list_round_trip(tmp_path_factory, rows, keep, blanks):
    lines = [f"{p} {c}" for p, c in rows]
    for b in sorted(blanks, reverse=True):  # blank lines anywhere are skipped
        lines.insert(min(b, len(lines)), "   ")
    path = tmp_path_factory.mktemp("list") / "train list.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    files, labels = read_file_list(path, keep)
    seen, expected = {}, []
    for p, c in rows:  # brute force: each class's first `keep` lines (0 = all), in file order
        seen[c] = seen.get(c, 0) + 1
        if keep == 0 or seen[c] <= keep:
            expected.append((p, c))
    assert list(zip(files, labels)) == expected


def test_file_lists_per_class_on_both_splits_and_classes_over_both(tmp_path):
    root = tmp_path / "a root with spaces"
    root.mkdir()
    (root / "train.txt").write_text("x/a 1.jpg 0\nx/b.jpg 2\nx/c.jpg 0\nx/d.jpg 0\n")
    (root / "val.txt").write_text("v/a.jpg 4\nv/b.jpg 4\nv/c.jpg 1\n")
    train, val = read_file_lists(root, per_class=2, val_per_class=1)
    assert train.files == ["x/a 1.jpg", "x/b.jpg", "x/c.jpg"] and train.labels == [0, 2, 0]
    assert val.files == ["v/a.jpg", "v/c.jpg"] and val.labels == [4, 1]
    assert train.classes == val.classes == ["0", "1", "2", "3", "4"]  # 0..max over both lists
    assert train.load(0) == (root / "x/a 1.jpg", 0, 0) and val.load(1) == (root / "v/c.jpg", 1, 1)
    every, _ = read_file_lists(root)  # 0 = all
    assert len(every) == 4
    assert read_file_list(root / "train.txt")[1] == [0, 2, 0, 0]  # the default keeps every line
    (root / "bad.txt").write_text("x/a.jpg 0\nx/b.jpg -1\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: the class must be >= 0, got -1"):
        read_file_list(root / "bad.txt")


def test_index_file_headers_are_checked(tmp_path):
    for header in ("v1.2 abc", "v1.2 3 extra", "3"):
        split = tmp_path / header.replace(" ", "_")
        write_shards(split, [("a", b"1", 0, 1)], per_tar=1)
        idx = split / "shard-00000.idx"
        idx.write_text(header + "\n" + idx.read_text().split("\n", 1)[1])
        with pytest.raises(ValueError, match="not a DALI index file"):
            list_shards(split)


def test_shards_whose_indices_miss_one_are_an_error(tmp_path):
    write_shards(tmp_path / "train", [("a", b"1", 0, 1), ("b", b"2", 0, 2)], per_tar=2)  # index 1 never given
    with pytest.raises(ValueError, match="do not cover 0..1"):
        list_shards(tmp_path / "train").sample_labels()


# ---------------------------------------------------------------- webdataset shards
def write_shards(split_dir, samples, per_tar):
    """Tars of `<key>.jpg/.index/.label` members and their DALI index files, as the layout documents."""
    split_dir.mkdir(parents=True)
    for t in range(0, len(samples), per_tar):
        tar_path = split_dir / f"shard-{t // per_tar:05d}.tar"
        with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tar:
            for key, data, index, label in samples[t:t + per_tar]:
                for ext, payload in (("jpg", data), ("index", np.int64(index).tobytes()),
                                     ("label", np.int64(label).tobytes())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        with tarfile.open(tar_path) as tar:  # read back: where each member's bytes start
            members = tar.getmembers()
        lines = [" ".join(f for m in members[i:i + 3] for f in (m.name.rsplit(".", 1)[1], str(m.offset_data),
                                                                   str(m.size), m.name))
                 for i in range(0, len(members), 3)]
        tar_path.with_suffix(".idx").write_text(f"v1.2 {len(lines)}\n" + "\n".join(lines) + "\n")
    (split_dir / "classes.txt").write_text("\n".join(f"class {c}" for c in range(7)) + "\n")


keys_text = st.text(st.sampled_from(list("abcXYZ019_-é漢.")), min_size=1, max_size=12)


@given(data=st.lists(st.tuples(keys_text, st.binary(min_size=0, max_size=300), st.integers(0, 6)),
                     min_size=1, max_size=12, unique_by=lambda s: s[0]),
       per_tar=st.integers(1, 5), order=st.randoms(use_true_random=False))
def test_webdataset_round_trip(tmp_path_factory, data, per_tar, order):
    indices = list(range(len(data)))
    order.shuffle(indices)  # dataset index need not follow the tar order
    samples = [(key, payload, index, label) for (key, payload, label), index in zip(data, indices)]
    split = tmp_path_factory.mktemp("wds") / "train"
    write_shards(split, samples, per_tar)
    shards = list_shards(split)
    assert len(shards) == len(samples) and shards.num_classes == 7
    expected_labels = np.zeros(len(samples), dtype=np.int64)
    for position, (key, payload, index, label) in enumerate(samples):
        image, got_label, got_index = shards.load(position)
        assert (image.read(), got_label, got_index) == (payload, label, index)
        assert shards.describe(position) == f"{shards.tars[position // per_tar]}:{key}.jpg"
        expected_labels[index] = label
    assert np.array_equal(shards.sample_labels(), expected_labels)
    start, stop = len(samples) // 3, len(samples) - len(samples) // 4
    got = list(read_samples(shards.tars, shards.indexes, start, stop))
    assert [name for name, _ in got] == [f"{shards.tars[p // per_tar]}:{samples[p][0]}.jpg" for p in range(start, stop)]
    assert [parts["jpg"] for _, parts in got] == [samples[p][1] for p in range(start, stop)]


# ---------------------------------------------------------------- validation counts
@given(b=st.integers(1, 12), c=st.integers(1, 12), seed=st.integers(0, 2**31), with_real=st.booleans())
def test_count_hits_against_brute_force(b, c, seed, with_real):
    rng = np.random.default_rng(seed)
    logits = np.stack([rng.permutation(c) for _ in range(b)]).astype(np.float32)  # no ties
    labels = rng.integers(0, c, b)
    valid = rng.random(b) < 0.7
    real = None
    if with_real:
        sets = [sorted(set(rng.integers(0, c, rng.integers(0, 4)).tolist())) for _ in range(b)]
        width = max(1, max(len(s) for s in sets))
        real = np.array([s + [-1] * (width - len(s)) for s in sets])
    out = count_hits(torch.tensor(logits), torch.tensor(labels), torch.tensor(valid),
                     None if real is None else torch.tensor(real)).tolist()
    top1 = top5 = real_hits = with_labels = 0
    for i in range(b):
        if not valid[i]:
            continue
        ranked = sorted(range(c), key=lambda k: -logits[i, k])
        top1 += ranked[0] == labels[i]
        top5 += labels[i] in ranked[:5]
        if real is not None and (real[i] >= 0).any():
            with_labels += 1
            real_hits += ranked[0] in real[i][real[i] >= 0]
    assert out == [top1, top5, real_hits, with_labels]


def test_real_label_table_by_file_name(tmp_path):
    real = tmp_path / "real labels.json"
    real.write_text(json.dumps([[3], [], [0, 2], [1]]))
    files = ["a/ILSVRC2012_val_00000004.JPEG", "ILSVRC2012_val_00000001.JPEG", "b c/ILSVRC2012_val_00000003.JPEG",
             "ILSVRC2012_val_00000002.JPEG"]
    table = real_label_table(str(real), files, num_classes=4)
    assert table.tolist() == [[1, -1], [3, -1], [0, 2], [-1, -1]]
    with pytest.raises(ValueError, match="ILSVRC2012_val_00000005"):
        real_label_table(str(real), ["ILSVRC2012_val_00000005.JPEG"], 4)  # past the list's end
    with pytest.raises(ValueError, match="ILSVRC2012_val_00000000"):
        real_label_table(str(real), ["ILSVRC2012_val_00000000.JPEG"], 4)  # numbering starts at 1
    single = real_label_table(str(real), files[:2], num_classes=4)  # at most one label per image: one column
    assert single.tolist() == [[1], [3]]
    (tmp_path / "broken.json").write_text("[[1], [2")
    with pytest.raises(ValueError, match="cannot read .*broken.json"):
        real_label_table(str(tmp_path / "broken.json"), files, 4)
    (tmp_path / "flat.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a list of class lists"):
        real_label_table(str(tmp_path / "flat.json"), files, 4)
    with pytest.raises(FileNotFoundError, match="data.real_labels: file not found"):
        real_label_table(str(tmp_path / "absent.json"), files, 4)
    with pytest.raises(ValueError, match="classes 0..3 in the labels, but the dataset has 3 classes"):
        real_label_table(str(real), files, num_classes=3)  # class 3 does not exist


# ---------------------------------------------------------------- config round trip
def value_strategy(key, info):
    from test_config_schema import cases, unwrap  # the generated per-key cases: their accepted values are valid

    kind, _ = unwrap(info.annotation)
    if kind is str:
        special = {"method": ["kd", "icd+kd", "dccd", "none", "crd"], "data.real_labels": ["", "timm"],
                   "train.compile_backend": ["inductor", "eager"]}
        if key.endswith("arch"):
            return st.sampled_from(["resnet10t", "resnet18", "mobilenetv3_small_050"])
        if key in special:
            return st.sampled_from(special[key])
        # text that YAML might read as something else: '1e5', 'on', '.5', '#', ': '
        return st.text(st.sampled_from(list("ab1e5 .:-_é#")), min_size=key.endswith("output_dir"), max_size=8)
    if kind is bool:
        return st.booleans()
    accepted = [v for v, ok, _ in cases(key, info) if ok]
    if accepted:
        return st.sampled_from(accepted)
    return st.floats(-10, 10, allow_nan=False) if kind is float else st.nothing()


SCHEMA = {k: info for k, (_, info) in keys().items()}


@given(st.fixed_dictionaries({}, optional={k: value_strategy(k, info) for k, info in SCHEMA.items()}))
@example({"train.name": "1e5", "train.output_dir": "on", "data.root": "1:30", "data.real_labels": ""})
def test_config_yaml_round_trip(tmp_path_factory, overrides):
    try:
        cfg = apply(Config(), nest(overrides), "test")
    except Exception:
        assume(False)  # a combination the cross-key rules refuse (val_resize < image_size)
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(to_yaml(cfg))  # a run's resolved config.yaml
    again = apply(Config(), load_yaml(path), str(path))
    assert to_dict(again) == to_dict(cfg)
