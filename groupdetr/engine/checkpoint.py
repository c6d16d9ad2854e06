"""Checkpoints of the run directory (:mod:`groupdetr.rundir`): the only torch files of the contract.

Each checkpoint's sha256 is recorded beside it (``checkpoint.pth.sha256``, the format of ``sha256sum``)
and checked on every load, so a damaged file is refused instead of loading other weights: ``torch.load``
reads a checkpoint with flipped bytes inside a tensor without complaint. The record is written *before*
the checkpoint it describes, naming both the new file and the one it replaces, and narrowed to the new
one after the rename, so a kill at any point leaves a checkpoint that its record accepts.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from groupdetr import rundir as rd

__all__ = ["save_checkpoint", "load_checkpoint", "load_checkpoint_with_digest", "checksum_path", "recorded_checksums", "CheckpointDamaged"]


class CheckpointDamaged(ValueError):
    """A checkpoint whose bytes are not what was written (empty, or another sha256 than recorded)."""


def checksum_path(path: Path) -> Path:
    """The checksum record of checkpoint ``path``: ``<name>.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def recorded_checksums(path: Path) -> list[str] | None:
    """The sha256 digests that the record of checkpoint ``path`` accepts (one after a finished write; two
    when a kill came between the record and the rename), or None when it has no record (a checkpoint
    written before records existed, or a copy of the file alone). A damaged record is CheckpointDamaged."""
    record = checksum_path(path)
    if not record.is_file():
        return None
    digests = []
    for line in record.read_bytes().decode("ascii", "replace").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or name != Path(path).name:
            raise CheckpointDamaged(f"its checksum record {record.name} is damaged")
        digests.append(digest)
    if not digests:
        raise CheckpointDamaged(f"its checksum record {record.name} is empty")
    return digests


def _write_record(path: Path, digests: list[str]) -> None:
    rd.atomic_write_text(checksum_path(path), "".join(f"{d}  {Path(path).name}\n" for d in dict.fromkeys(digests)))


def save_checkpoint(path: Path, state: dict, checksum: bool = True) -> None:
    """``torch.save`` to memory, then an atomic write: a kill never leaves a torn checkpoint. With
    ``checksum``, its sha256 is recorded beside it (see the module's docstring for the order)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    if not checksum:
        rd.atomic_write_bytes(path, data)
        return
    digest = hashlib.sha256(data).hexdigest()
    try:
        previous = recorded_checksums(path)
    except CheckpointDamaged:
        previous = None
    if previous is None:  # no usable record: the file in place (if any) is what a kill would leave
        previous = [hashlib.sha256(Path(path).read_bytes()).hexdigest()] if Path(path).is_file() else []
    _write_record(path, [digest, *previous])  # accepts the new file and the one still in place
    rd.atomic_write_bytes(path, data)
    _write_record(path, [digest])


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` (tensors and plain containers only) of a checkpoint whose sha256 is
    the recorded one; CheckpointDamaged when it is empty or another. A checkpoint without a record is
    loaded unchecked."""
    return load_checkpoint_with_digest(path)[0]


def load_checkpoint_with_digest(path: Path) -> tuple[dict, str]:
    """:func:`load_checkpoint` and the sha256 of the bytes it loaded (for a record of where weights came from:
    ``model.init_from``), from one read of the file."""
    data = Path(path).read_bytes()
    if not data:
        raise CheckpointDamaged("the file is empty")
    digest = hashlib.sha256(data).hexdigest()
    accepted = recorded_checksums(path)
    if accepted is not None and digest not in accepted:
        raise CheckpointDamaged(f"sha256 {digest[:12]}... is not the {accepted[0][:12]}... recorded in "
                                f"{checksum_path(path).name} when it was written: the file is damaged")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), digest
