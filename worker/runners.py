"""The body of each kind of run: where the experiment engine and storage meet.

Each runner returns normally when the run's work is complete, or after ``ctx.should_stop()`` said to stop
(the caller reads ``ctx.stopped_because``). Heavy imports (Keras, TensorFlow) happen inside the runners,
in the task process only.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

from storage import repository as repo
from storage.models import ArtifactKind, RunKind
from worker.context import RunContext
from worker.experiments.checkpoints import STATE_FILE, checkpoint_model_path
from worker.specs import ReportSpec, TrainSpec, VisualizeSpec

ARTIFACT_IMAGE_PREFIX = "artifact:"


def run_train(ctx: RunContext) -> None:
    from worker.experiments.data import load_cifar10
    from worker.experiments.regimes import EpochRecord, read_checkpoint_history, train

    spec = TrainSpec.from_dict(ctx.spec)
    checkpoint_rel = f"{ctx.run_dir()}/checkpoint"
    checkpoint_dir = ctx.store.absolute(checkpoint_rel)
    # A resumed run: make sure every epoch the checkpoint holds is stored (upsert, so never twice).
    earlier = read_checkpoint_history(checkpoint_dir)
    if earlier:
        with ctx.db.session() as s:
            for record in earlier:
                repo.record_epoch(s, ctx.run_id, **record.to_dict())

    data = load_cifar10(
        ctx.settings.cifar10_path,
        train_limit=spec.train_limit,
        val_limit=spec.val_limit,
        seed=spec.seed,
        cache_dir=ctx.settings.home / "cache",
    )

    def on_epoch(record: EpochRecord) -> None:
        with ctx.db.session() as s:
            repo.record_epoch(s, ctx.run_id, **record.to_dict())
            ctx.cancel_seen = repo.get_run(s, ctx.run_id).cancel_requested

    result = train(
        spec,
        data,
        checkpoint_dir,
        weights_dir=ctx.settings.weights_dir,
        on_epoch=on_epoch,
        should_stop=ctx.should_stop,
    )
    ctx.register_file(f"{checkpoint_rel}/{STATE_FILE}", ArtifactKind.CHECKPOINT)
    ctx.register_file(f"{checkpoint_rel}/{result.checkpoint_path.name}", ArtifactKind.CHECKPOINT)
    if result.stopped and result.epochs_completed < result.total_epochs:
        return
    ctx.stopped_because = None  # the last epoch finished: the run is complete whatever came after


def _png(array: object) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # type: ignore[arg-type]
    return buffer.getvalue()


def _checkpoint_of_dependency(ctx: RunContext) -> Path | None:
    with ctx.db.session() as s:
        for dependency in repo.dependencies_of(s, ctx.run_id):
            if dependency.kind == RunKind.TRAIN:
                source_id = dependency.reused_run_id or dependency.id
                return checkpoint_model_path(ctx.store.absolute(f"runs/{source_id}/checkpoint"))
    return None


def resolve_image(ctx: RunContext, image: str) -> str:
    """Photos are copied into the artifact store at submit time, so every worker can read them."""
    if image.startswith(ARTIFACT_IMAGE_PREFIX):
        return str(ctx.store.absolute(image[len(ARTIFACT_IMAGE_PREFIX) :]))
    return image


def run_visualize(ctx: RunContext) -> None:
    from dataclasses import replace

    from worker.experiments.visualize import visualize

    spec = VisualizeSpec.from_dict(ctx.spec)
    checkpoint = _checkpoint_of_dependency(ctx) if spec.source == "checkpoint" else None
    if spec.source == "checkpoint" and checkpoint is None:
        raise ValueError("source=checkpoint but the run depends on no training run")
    spec = replace(spec, image=resolve_image(ctx, spec.image))
    result = visualize(spec, checkpoint=checkpoint, weights_dir=ctx.settings.weights_dir)
    ctx.save_bytes("input.png", _png(result.input_image), ArtifactKind.IMAGE)
    for layer, picture in result.layers.items():
        ctx.save_bytes(f"{layer}.png", _png(picture), ArtifactKind.IMAGE)
    summary = {"activation_before": result.activation_before, "activation_after": result.activation_after}
    ctx.save_bytes("result.json", json.dumps(summary, indent=2).encode(), ArtifactKind.LOG)


def run_report(ctx: RunContext) -> None:
    from orchestrator.report.build import build_report

    spec = ReportSpec.from_dict(ctx.spec)
    with ctx.db.session() as s:
        result = build_report(s, ctx.store.root, spec.sweep_id)
    for path in result.paths:
        relpath = Path(path).resolve().relative_to(ctx.store.root.resolve()).as_posix()
        kind = ArtifactKind.REPORT if relpath.endswith((".html", ".md")) else ArtifactKind.FIGURE
        ctx.register_file(relpath, kind)


RUNNERS: dict[RunKind, Callable[[RunContext], None]] = {
    RunKind.TRAIN: run_train,
    RunKind.VISUALIZE: run_visualize,
    RunKind.REPORT: run_report,
}
