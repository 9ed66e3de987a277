"""Sweeps filled by hand in a real SQLite database (no training): runs, epochs, image artifacts on disk.

Helpers for the report tests (the fixtures that use them are in ``conftest.py``)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from storage.models import Artifact, EpochMetric, Run, RunDependency, Sweep

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# Final validation accuracy (fraction) each regime's synthetic curve ends at, like the seed.
DEFAULT_FINALS = {"scratch": 0.354, "imagenet": 0.78, "finetune": 0.775}


@dataclass
class SweepBuilder:
    session: Session
    root: Path
    sweep: Sweep
    runs: list[Run] = field(default_factory=list)
    _n: int = 0

    def _next(self) -> int:
        self._n += 1
        return self._n

    def train(
        self,
        regime: str,
        seed: int = 0,
        *,
        epochs: int = 60,
        done: int | None = None,
        status: str = "succeeded",
        final: float | None = None,
        error: str | None = None,
        spec_extra: dict[str, object] | None = None,
        reuse: Run | None = None,
        label: str | None = None,
    ) -> Run:
        n = self._next()
        done = epochs if done is None else done
        spec: dict[str, object] = {"regime": regime, "seed": seed, "epochs": epochs}
        if regime == "finetune":
            spec.update(head_epochs=epochs // 3, tune_epochs=epochs - epochs // 3)
        spec.update(spec_extra or {})
        run = Run(
            id=f"r-{self.sweep.id[-4:]}{regime[:4]}{seed}x{n:03d}",
            sweep_id=self.sweep.id,
            kind="train",
            label=label or regime,
            spec=spec,
            spec_hash=hashlib.sha256(repr(spec).encode()).hexdigest(),
            seed=seed,
            status=status,
            total_epochs=epochs,
            last_epoch=done,
            device="cpu:0" if status != "queued" else None,
            created_at=T0 + timedelta(seconds=n),
            started_at=T0 if status != "queued" else None,
            finished_at=T0 + timedelta(seconds=30 * done) if status in ("succeeded", "failed") else None,
            error=error,
            reused_run_id=reuse.id if reuse else None,
        )
        self.session.add(run)
        self.session.flush()
        if reuse is None:
            target = DEFAULT_FINALS[regime] if final is None else final
            rng = np.random.default_rng(seed * 97 + n)
            for e in range(1, done + 1):
                start = 0.38 if regime != "scratch" else 0.1
                val = start + (target - start) * (1 - math.exp(-4 * e / epochs)) / (1 - math.exp(-4))
                if e != epochs:  # the final value is exact, so tests can craft conclusions
                    val += float(rng.normal(0, 0.005))
                phase = "train"
                if regime == "finetune":
                    phase = "head" if e <= epochs // 3 else "tune"
                self.session.add(
                    EpochMetric(
                        run_id=run.id,
                        epoch=e,
                        phase=phase,
                        loss=2.3 * (1 - val) + 0.05,
                        accuracy=min(1.0, val + 0.08),
                        val_loss=2.3 * (1 - val) + 0.2,
                        val_accuracy=val,
                        lr=1e-4 if phase != "tune" else 1e-5,
                        seconds=30.0,
                        images_per_second=1650.0,
                    )
                )
        self.runs.append(run)
        return run

    def visualize(
        self,
        kind: str,
        *,
        status: str = "succeeded",
        error: str | None = None,
        write_images: bool = True,
        model: Run | None = None,
        spec_extra: dict[str, object] | None = None,
        activations: dict[str, tuple[float, float]] | None = None,
        size: int = 32,
    ) -> Run:
        """A visualization run; ``model`` is the training it depends on, ``activations`` (layer -> before,
        after) are written as its result.json, ``size`` is the side of the images written."""
        n = self._next()
        image = kind if kind in ("random", "sine") else "photos/dog.jpg"
        spec: dict[str, object] = {"image": image, "seed": 0, "layers": ["conv_pw_12", "conv_pw_13"]}
        spec.update(spec_extra or {})
        run = Run(
            id=f"r-{self.sweep.id[-4:]}vis{kind[:3]}{n:03d}",
            sweep_id=self.sweep.id,
            kind="visualize",
            label=kind,
            spec=spec,
            spec_hash=hashlib.sha256(repr(spec).encode()).hexdigest(),
            seed=0,
            status=status,
            device="cpu:0",
            created_at=T0 + timedelta(seconds=n),
            started_at=T0,
            finished_at=T0 + timedelta(seconds=20) if status != "running" else None,
            error=error,
        )
        self.session.add(run)
        self.session.flush()
        if model is not None:
            self.session.add(RunDependency(run_id=run.id, depends_on_id=model.id))
        if status == "succeeded" and write_images:
            rng = np.random.default_rng(n)
            for name in ("input", "conv_pw_12", "conv_pw_13"):
                rel = f"runs/{run.id}/attempt-1/{name}.png"
                path = self.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path)
                self._artifact(run, rel, "image")
        if status == "succeeded" and activations is not None:
            rel = f"runs/{run.id}/attempt-1/result.json"
            summary = {
                "activation_before": {k: v[0] for k, v in activations.items()},
                "activation_after": {k: v[1] for k, v in activations.items()},
            }
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_text(json.dumps(summary))
            self._artifact(run, rel, "log")
        self.runs.append(run)
        return run

    def _artifact(self, run: Run, rel: str, kind: str) -> None:
        data = (self.root / rel).read_bytes()
        self.session.add(
            Artifact(
                run_id=run.id, kind=kind, path=rel, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)
            )
        )


MakeSweep = Callable[..., SweepBuilder]


def complete_sweep(builder: SweepBuilder, seeds: int = 1, epochs: int = 60) -> SweepBuilder:
    for regime in ("scratch", "imagenet", "finetune"):
        for seed in range(seeds):
            builder.train(regime, seed, epochs=epochs)
    for kind in ("random", "sine", "photo"):
        builder.visualize(kind)
    builder.session.commit()
    return builder
