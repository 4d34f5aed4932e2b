"""The `filelist` format: `<root>/train.txt` and `<root>/val.txt`, one `<path relative to root> <class>` per line.

Sample index i is line i (blank lines skipped), for every loader and CRD's memory banks alike.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.data.folder import FolderListing
from pipeline.errors import BadInputError, MissingInputError


def read_file_list(path: Path, keep_per_class: int = 0) -> tuple[list[str], list[int]]:
    """(files, classes) of one list; `keep_per_class` > 0 keeps each class's first that many lines."""
    if not path.is_file():
        raise MissingInputError(f"file list not found: {path} (lines: <path relative to {path.parent}> <class>)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"cannot read file list {path}: {e}") from None
    files, labels, seen = [], [], {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            file, label = line.rsplit(maxsplit=1)
            label = int(label)
        except ValueError:
            raise BadInputError(f"{path}:{n}: expected '<path> <class>', got {line!r}") from None
        if label < 0:
            raise BadInputError(f"{path}:{n}: the class must be >= 0, got {label}")
        seen[label] = seen.get(label, 0) + 1
        if keep_per_class <= 0 or seen[label] <= keep_per_class:
            files.append(file)
            labels.append(label)
    if not files:
        raise BadInputError(f"{path}: no samples (lines: <path relative to {path.parent}> <class>)")
    return files, labels


def read_file_lists(root: Path, per_class: int = 0, val_per_class: int = 0) -> tuple[FolderListing, FolderListing]:
    """`<root>/train.txt` and `<root>/val.txt` as listings; the classes are 0..max label over both lists."""
    root = Path(root)
    parsed = [read_file_list(root / "train.txt", per_class), read_file_list(root / "val.txt", val_per_class)]
    classes = [str(c) for c in range(1 + max(max(labels) for _, labels in parsed))]
    train, val = (FolderListing(root, classes, files, labels) for files, labels in parsed)
    return train, val
