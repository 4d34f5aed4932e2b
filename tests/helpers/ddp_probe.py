"""Run the real Trainer under `accelerate launch`, then dump what the DDP test needs to check.

Each rank writes <out>/rank<r>.pt: its process count, the dataset indices of its first training
batch, its student weights after training, and (rank 0) a single-process top-1 of those weights.
"""
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from pipeline.config import parse_args  # noqa: E402
from pipeline.data import dataset_root  # noqa: E402
from pipeline.data.folder import list_image_folder  # noqa: E402
from pipeline.data.torch_loader import TorchLoader  # noqa: E402
from pipeline.trainer import Trainer  # noqa: E402


def single_process_top1(trainer: Trainer) -> tuple[float, int]:
    """Top-1 of the student over every validation image, read by one process without sharding."""
    cfg = trainer.cfg.data
    listing = list_image_folder(dataset_root(cfg) / "val", cfg.val_per_class)
    loader = TorchLoader(listing, train=False, batch_size=7, views=1, image_size=cfg.image_size,
                         val_resize=cfg.val_resize, min_area=cfg.min_area, mean=cfg.mean, std=cfg.std,
                         workers=0, seed=0, rank=0, world=1, device=torch.device("cpu"))
    student = trainer.accelerator.unwrap_model(trainer.model).student.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            logits, _ = student(batch["images"])
            hit = (logits.argmax(1) == batch["labels"]) & batch["valid"]
            correct += int(hit.sum())
            total += int(batch["valid"].sum())
    return 100 * correct / total, total


def main():
    logging.basicConfig(level=logging.INFO)
    out = Path(sys.argv[1])
    cfg, args = parse_args(sys.argv[2:])
    trainer = Trainer(cfg, resume=args.resume)
    trainer.train_loader.set_epoch(trainer.epoch)
    first_index = next(iter(trainer.train_loader))["index"].cpu()
    summary = trainer.fit()
    student = trainer.accelerator.unwrap_model(trainer.model).student
    record = {"rank": trainer.accelerator.process_index, "world": trainer.accelerator.num_processes,
              "first_index": first_index, "summary": summary,
              "weights": {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}}
    if trainer.accelerator.is_main_process:
        record["single_process_top1"] = single_process_top1(trainer)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(record, out / f"rank{record['rank']}.pt")


if __name__ == "__main__":
    main()
