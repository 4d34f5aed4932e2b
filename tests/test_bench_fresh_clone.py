"""bench/ on a fresh clone: the demo teacher a benchmark needs is trained once when missing, then reused."""
import timm
import yaml

from bench.common import ensure_demo_teacher
from pipeline.models import load_weights


def test_missing_demo_teacher_is_trained_once_then_reused(tmp_path, demo_root):
    teacher = tmp_path / "teachers" / "demo.safetensors"
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(f"""method: kd
teacher: {{arch: resnet10t, checkpoint: {teacher}, train_if_missing: true, train_epochs: 1, train_batch_size: 4,
          train_per_class: 3}}
student: {{arch: resnet10t}}
data: {{backend: torch, image_size: 28, val_resize: 32, per_class: 4, val_per_class: 2, workers: 0}}
train: {{epochs: 1, batch_size: 8, steps_per_epoch: 2, compile: 'off', output_dir: {tmp_path / 'runs'}}}
""")
    assert ensure_demo_teacher(str(recipe)) == teacher
    teacher_run = yaml.safe_load((tmp_path / "runs" / "teacher-demo" / "config.yaml").read_text())
    assert (teacher_run["method"], teacher_run["student"]["arch"]) == ("none", "resnet10t")
    assert (teacher_run["train"]["batch_size"], teacher_run["data"]["per_class"]) == (4, 3)  # the teacher's own
    load_weights(timm.create_model("resnet10t", num_classes=10), teacher)  # a complete teacher of the arch
    written = teacher.stat().st_mtime_ns
    assert ensure_demo_teacher(str(recipe)) == teacher and teacher.stat().st_mtime_ns == written  # not retrained
