"""``orchestrator tensorboard``: every training's epochs as TensorBoard event files, from the database.

Because they are written from the database, they exist for runs on any host and for old sweeps. One run
folder per training, ``<logdir>/<sweep>/<label>`` (``.../<label>/seed-<n>`` when a label has several
seeds), holding one event file whose scalars, at step = epoch and at the time the epoch was recorded, are
the epoch's fields (``SCALARS``). ``tensorboard --logdir <logdir>`` then shows every sweep side by side.

Following (``--follow``), epochs are appended as they land, which TensorBoard's reader picks up live. An
epoch rewritten after it was exported (a resumed attempt recomputed it) gets the run a fresh file with a
later name, and the old one removed: TensorBoard reads a folder's files in name order and drops what a
file's earlier steps replace.

The files are written here, without TensorFlow or the ``tensorboard`` package: a TFRecord (length, masked
CRC-32C, data, masked CRC-32C) of ``Event`` protocol buffers (``tensorboard/compat/proto/event.proto``)
holding ``Summary.Value.simple_value`` scalars, encoded by hand (a handful of fields).
"""

from __future__ import annotations

import os
import re
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from contract.records import EpochRecord
from orchestrator.results import SweepResults, TrainingResult

SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_second")
FILE_VERSION = "brain.Event:2"
_PREFIX = "events.out.tfevents."
_SUFFIX = ".convlab"  # only files with it are ours to replace


# --------------------------------------------------------------------------------- the file format
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord frames use it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord frame."""
    length = struct.pack("<Q", len(data))
    return (
        length + struct.pack("<I", _masked(crc32c(length))) + data + struct.pack("<I", _masked(crc32c(data)))
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(
    wall_time: float, step: int = 0, *, scalars: Iterable[tuple[str, float]] = (), version: str = ""
) -> bytes:
    """An ``Event``: wall_time (1, double), step (2, int64), file_version (3), summary (5) of
    ``Value``s with tag (1) and simple_value (2, float)."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    if step:
        out += _varint(2 << 3 | 0) + _varint(step)
    if version:
        out += _bytes_field(3, version.encode())
    values = b"".join(
        _bytes_field(1, _bytes_field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
        for tag, value in scalars
    )
    if values:
        out += _bytes_field(5, values)
    return out


def epoch_event(e: EpochRecord, recorded_at: datetime | None) -> bytes:
    when = recorded_at.timestamp() if recorded_at else time.time()
    values = ((tag, getattr(e, tag)) for tag in SCALARS)
    return record(event(when, e.epoch, scalars=[(t, float(v)) for t, v in values if v is not None]))


# --------------------------------------------------------------------------------- the run folders
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", name) or "_"


def run_dirs(sweep: SweepResults) -> dict[str, str]:
    """run id -> its folder under the logdir: ``sweep/label``, or ``sweep/label/seed-N`` for a label
    that several seeds share."""
    counts: dict[str, int] = {}
    for t in sweep.trainings:
        counts[t.label] = counts.get(t.label, 0) + 1
    dirs = {}
    for t in sweep.trainings:
        base = f"{_safe(sweep.id or 'no-sweep')}/{_safe(t.label)}"
        dirs[t.run_id] = f"{base}/seed-{t.seed}" if counts[t.label] > 1 else base
    return dirs


@dataclass
class _Exported:
    path: Path
    epochs: list[tuple[int, datetime | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Written:
    """What one :meth:`EventFiles.sync` did for one training."""

    run_id: str
    run_dir: Path
    new_epochs: int
    rewritten: bool


class EventFiles:
    """The event files under ``logdir``, kept in step with the database by :meth:`sync`."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self._exported: dict[str, _Exported] = {}

    def sync(self, sweeps: Sequence[SweepResults]) -> list[Written]:
        """Write what is new since the last call (everything on the first) for every training."""
        written = []
        for sweep in sweeps:
            dirs = run_dirs(sweep)
            for t in sweep.trainings:
                done = self._sync_one(t, self.logdir / dirs[t.run_id])
                if done is not None:
                    written.append(done)
        return written

    def _sync_one(self, t: TrainingResult, folder: Path) -> Written | None:
        rows = [(e.epoch, at) for e, at in zip(t.epochs, t.recorded_at, strict=True)]
        known = self._exported.get(t.run_id)
        if known is not None and rows[: len(known.epochs)] == known.epochs:
            fresh = list(zip(t.epochs, t.recorded_at, strict=True))[len(known.epochs) :]
            if not fresh:
                return None
            with open(known.path, "ab") as f:
                f.write(b"".join(epoch_event(e, at) for e, at in fresh))
            known.epochs = rows
            return Written(t.run_id, folder, len(fresh), rewritten=False)
        path = _write_fresh(folder, t)
        self._exported[t.run_id] = _Exported(path, rows)
        return Written(t.run_id, folder, len(rows), rewritten=known is not None)


def _write_fresh(folder: Path, t: TrainingResult) -> Path:
    """A new event file with every epoch, named after the ones there (TensorBoard reads in name order);
    earlier files of ours in the folder are removed once it is in place."""
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in folder.iterdir() if p.name.startswith(_PREFIX) and p.name.endswith(_SUFFIX))
    stamps = [p.name[len(_PREFIX) : -len(_SUFFIX)] for p in old]
    stamp = max([time.time_ns(), *(int(s) + 1 for s in stamps if s.isdigit())])
    path = folder / f"{_PREFIX}{stamp:019d}{_SUFFIX}"
    first = min((at for at in t.recorded_at if at is not None), default=None)
    data = record(event(first.timestamp() if first else time.time(), version=FILE_VERSION))
    data += b"".join(epoch_event(e, at) for e, at in zip(t.epochs, t.recorded_at, strict=True))
    tmp = folder / f".convlab-{uuid.uuid4().hex}.tmp"  # no "tfevents" in it: TensorBoard skips it
    tmp.write_bytes(data)
    os.replace(tmp, path)
    for p in old:
        p.unlink(missing_ok=True)
    return path
