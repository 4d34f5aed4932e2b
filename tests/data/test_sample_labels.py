"""Every loader gives the class of each train sample by dataset index (CRD draws its negatives by class):
folder listings directly, webdataset shards read back from their `.index` / `.label` members."""
import numpy as np
import torch

from pipeline.data.dali.webdataset import list_shards, write_shards
from pipeline.data.folder import list_image_folder
from pipeline.data.torch_loader import TorchLoader


def test_shard_labels_follow_dataset_indices(imagenet_root, tmp_path):
    listing = list_image_folder(imagenet_root / "train")
    order = np.random.default_rng(0).permutation(len(listing))  # shards hold samples out of index order
    shards = write_shards(listing, tmp_path / "train", per_shard=6, order=order)
    labels = list_shards(tmp_path / "train").sample_labels()
    assert len(shards.tars) == 4 and labels.tolist() == listing.labels
    assert len(set(listing.labels)) > 1  # a real check: several classes


def test_torch_loader_sample_labels(imagenet_root):
    listing = list_image_folder(imagenet_root / "train")
    loader = TorchLoader(listing, train=True, batch_size=4, views=1, image_size=32, val_resize=40, min_area=0.5,
                         mean=[0.5] * 3, std=[0.5] * 3, workers=0, seed=0, rank=0, world=1,
                         device=torch.device("cpu"))
    assert loader.sample_labels().dtype == torch.int64 and loader.sample_labels().tolist() == listing.labels
