"""ImageNet-ReaL top-1 beside top-1/top-5: label sets found by val file name, counted over valid samples only,
exact when the val set is split over processes and padded (the hand-made fixture below)."""
import json

import pytest
import torch

from pipeline.data.sharding import val_indices
from pipeline.errors import BadInputError, MissingInputError
from pipeline.metrics import count_hits, real_label_table

# Five val images (in listing order) and a real.json whose entry n is the set of ILSVRC2012_val_{n+1:08d}.JPEG.
FILES = ["c0/ILSVRC2012_val_00000004.JPEG", "c1/ILSVRC2012_val_00000001.JPEG", "c1/ILSVRC2012_val_00000002.JPEG",
         "c2/ILSVRC2012_val_00000005.JPEG", "c2/ILSVRC2012_val_00000003.JPEG"]
REAL = [[1], [0, 2], [], [0], [2]]  # val 1: {1}, val 2: {0, 2}, val 3: none, val 4: {0}, val 5: {2}
LABELS = [0, 1, 1, 2, 2]  # the folder classes
PREDICTED = [0, 2, 0, 1, 1]  # the model's top-1 for each image
# By hand: top-1 = images 0 (0 = 0) -> 1 of 5. ReaL: image 0 (val 4, {0}) hit; 1 (val 1, {1}) miss;
# 2 (val 2, {0, 2}) hit; 3 (val 5, {2}) miss; 4 (val 3, no labels) left out -> 2 of 4.
TOP1, REAL_HITS, REAL_IMAGES = 1, 2, 4


@pytest.fixture
def real_json(tmp_path):
    path = tmp_path / "real.json"
    path.write_text(json.dumps(REAL))
    return str(path)


def logits_for(rows: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(rows), 3)
    out[torch.arange(len(rows)), torch.as_tensor(PREDICTED)[rows]] = 1.0
    return out


def test_real_label_table_follows_the_file_names(real_json):
    table = real_label_table(real_json, FILES, num_classes=3)
    assert table.tolist() == [[0, -1], [1, -1], [0, 2], [2, -1], [-1, -1]]


@pytest.mark.parametrize("world,batch_size", [(1, 5), (2, 2), (3, 1)])
def test_real_top1_is_exact_across_padded_ranks(real_json, world, batch_size):
    """Each rank counts its padded batches; the sums over ranks are the hand-worked figures. Padding reads
    sample 0 (a ReaL hit and a top-1 hit), so a count that ignored `valid` would be too high."""
    table = real_label_table(real_json, FILES, num_classes=3)
    total = torch.zeros(4, dtype=torch.int64)
    padded = 0
    for rank in range(world):
        idx, valid = val_indices(len(FILES), batch_size, rank, world)
        padded += int((~torch.from_numpy(valid)).sum())
        for rows, mask in zip(torch.from_numpy(idx), torch.from_numpy(valid)):
            total += count_hits(logits_for(rows), torch.as_tensor(LABELS)[rows], mask, table[rows])
    assert total.tolist()[0] == TOP1 and total.tolist()[2:] == [REAL_HITS, REAL_IMAGES]
    assert padded > 0 or world == 1


def test_real_labels_shipped_with_timm():
    table = real_label_table("timm", ["n/ILSVRC2012_val_00000002.JPEG", "n/ILSVRC2012_val_00050000.JPEG"], 1000)
    assert table.shape[0] == 2 and sorted(c for c in table[0].tolist() if c >= 0) == [795, 970]


def test_real_label_errors_name_the_problem(real_json, tmp_path):
    with pytest.raises(BadInputError, match="img_1.jpg is not an ImageNet val image name"):
        real_label_table(real_json, ["c0/img_1.jpg"], 3)
    with pytest.raises(BadInputError, match="dataset has 2 classes"):
        real_label_table(real_json, FILES, 2)
    with pytest.raises(MissingInputError, match="file not found: .*nope.json"):
        real_label_table(str(tmp_path / "nope.json"), FILES, 3)


def test_trainer_reports_real_top1_beside_top1(tmp_path):
    """The wiring: val file names -> label sets -> `student_real_top1`. Every labelled image's set holds both
    classes, so ReaL top-1 is 100 whatever the (untrained) student predicts; the unlabelled image is left out."""
    from PIL import Image

    from pipeline.config import parse_args
    from pipeline.trainer import Trainer

    for split in ("train", "val"):
        for k in range(1, 7):
            folder = tmp_path / "data" / split / f"c{k % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), (40 * k, 255 - 30 * k, 90)).save(folder / f"ILSVRC2012_val_{k:08d}.JPEG")
    (tmp_path / "real.json").write_text(json.dumps([[0, 1]] * 5 + [[]]))  # val 6 has no ReaL labels
    cfg, _ = parse_args(["--method", "none", "--student.arch", "resnet10t", "--data.root", str(tmp_path / "data"),
                         "--data.backend", "torch", "--data.workers", "0", "--data.image_size", "16",
                         "--data.val_resize", "16", "--train.batch_size", "4", "--train.compile", "off",
                         "--train.output_dir", str(tmp_path / "runs"), "--data.real_labels", str(tmp_path / "real.json")])
    metrics = Trainer(cfg).evaluate()
    assert metrics["val_images"] == 6 and metrics["student_real_top1"] == 100.0
