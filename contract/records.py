"""The record of one finished epoch: written by the engine, stored by storage (one row per epoch), shown
by status and the report. Its fields are listed here and nowhere else (storage's table has one column
each); every layer passes this type, or its ``to_dict()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch. ``epoch`` is 1-based and continuous across fine-tuning phases.

    ``phase`` is ``train`` (scratch, imagenet) or ``head`` then ``tune`` (finetune). ``seconds`` is the
    wall time of the whole epoch (training + validation); ``images_per_second`` counts training alone.
    """

    epoch: int
    phase: str
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, row: Any) -> EpochRecord:
        """From anything with these attributes (storage's epoch row)."""
        return cls(**{name: getattr(row, name) for name in cls.field_names()})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
