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

from contract.inputs import WEIGHTS_ALPHA_TEXT, weights_file_name
from contract.specs import ReportSpec, TrainSpec, VisualizeSpec
from storage import repository as repo
from storage.errors import ArtifactError
from storage.models import ArtifactKind, RunKind
from worker.context import RunContext
from worker.experiments.checkpoints import model_file_name, state_file_name
from worker.experiments.errors import StopRequested

ARTIFACT_IMAGE_PREFIX = "artifact:"


def run_train(ctx: RunContext) -> None:
    from storage import remote_inputs  # obstore is imported only where it is used
    from worker.experiments.checkpoints import read_state_file
    from worker.experiments.data import load_cifar10
    from worker.experiments.regimes import EpochRecord, train

    spec = TrainSpec.from_dict(ctx.spec)
    checkpoint_rel = f"{ctx.attempt_dir()}/checkpoint"
    # Where Keras writes the epochs' files: the store's folder itself, or a local scratch folder whose
    # files each epoch's commit uploads (an object store).
    checkpoint_dir = ctx.store.scratch_folder(checkpoint_rel)
    # Read after the claim: the attempt this one replaced can no longer commit a newer checkpoint.
    with ctx.db.session(readonly=True) as s:
        committed = repo.get_run(s, ctx.run_id).checkpoint
    resume_from = verified_checkpoint(ctx, ctx.run_id, committed) if committed else None
    if resume_from is not None:
        resumed = read_state_file(resume_from)
        # Make sure every epoch the checkpoint holds is stored (upsert, so never twice).
        with ctx.db.session() as s:
            for record in resumed.history:
                repo.record_epoch(s, ctx.run_id, record, fence=ctx.fence)

    data = load_cifar10(
        remote_inputs.local_cifar10(ctx.settings),  # a URL: this host's verified copy, fetched once
        train_limit=spec.train_limit,
        val_limit=spec.val_limit,
        seed=spec.seed,
        cache_dir=ctx.settings.home / "cache",
    )

    def on_epoch(record: EpochRecord) -> None:
        """The epoch's commit point: its metrics and its checkpoint, in one fenced transaction."""
        state_rel = f"{checkpoint_rel}/{state_file_name(record.epoch)}"
        model_rel = f"{checkpoint_rel}/{model_file_name(record.epoch)}"
        # Every file is stored before the transaction that names it: no epoch commits without them.
        files = [_stored(ctx, rel) for rel in (model_rel, state_rel)]
        with ctx.db.session() as s:
            repo.record_epoch(s, ctx.run_id, record, fence=ctx.fence, checkpoint=state_rel)
            superseded = repo.commit_checkpoint_files(s, ctx.run_id, fence=ctx.fence, files=files)
            ctx.cancel_seen = repo.cancel_requested(s, ctx.run_id)
        for relpath in superseded:  # no longer the run's checkpoint: no one will read it again
            ctx.store.delete(relpath)

    batches_per_epoch = -(-len(data.x_train) // spec.batch_size)

    def on_progress(epoch: int, batches: int, images_per_second: float) -> None:
        # Called on Keras's callback thread for every batch: one assignment, the heartbeat sends it.
        ctx.heartbeat.progress = {
            "epoch": epoch,
            "batches": batches,
            "of": batches_per_epoch,
            "images_per_second": round(images_per_second, 1),
        }

    result = train(
        spec,
        data,
        checkpoint_dir,
        weights_dir=_weights_dir(ctx, spec.alpha, needed=spec.weights == "imagenet"),
        resume_from=resume_from,
        on_epoch=on_epoch,
        should_stop=ctx.should_stop,
        on_progress=on_progress,
        loop=ctx.settings.train_loop,
    )
    if result.stopped and result.epochs_completed < result.total_epochs:
        return
    ctx.stopped_because = None  # the last epoch finished: the run is complete whatever came after


def _weights_dir(ctx: RunContext, alpha: float, *, needed: bool) -> str | None:
    """``CONVLAB_WEIGHTS_DIR`` as a local folder; a URL's holds this host's verified copy of the width's
    file when the run loads ImageNet weights (nothing is fetched otherwise)."""
    from storage import remote_inputs

    names = [weights_file_name(alpha)] if needed and alpha in WEIGHTS_ALPHA_TEXT else []
    return remote_inputs.local_weights_dir(ctx.settings, names)


def _stored(ctx: RunContext, relpath: str) -> tuple[str, str, int]:
    stored = ctx.store.store_scratch(relpath)
    return stored.path, stored.sha256, stored.size


def verified_checkpoint(ctx: RunContext, run_id: str, state_rel: str) -> Path:
    """A local copy of the state file ``state_rel`` of run ``run_id``, beside a local copy of the model
    file it names, both checked against the sha256 the database recorded for them
    (:class:`ArtifactError` naming the file if not)."""
    from worker.experiments.checkpoints import read_state_file

    with ctx.db.session(readonly=True) as s:
        state_art = repo.artifact_at(s, run_id, state_rel)
        if state_art is None:
            raise ArtifactError(state_rel, f"not recorded as an artifact of run {run_id}")
        state_file = ctx.store.local_copy(state_rel, state_art.sha256)
        model_rel = f"{state_rel.rsplit('/', 1)[0]}/{read_state_file(state_file).model_file}"
        model_art = repo.artifact_at(s, run_id, model_rel)
        if model_art is None:
            raise ArtifactError(model_rel, f"not recorded as an artifact of run {run_id}")
    ctx.store.local_copy(model_rel, model_art.sha256)  # lands beside the state file (ArtifactStore doc)
    return state_file


def _png(array: object) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")  # type: ignore[arg-type]
    return buffer.getvalue()


def _checkpoint_of_dependency(ctx: RunContext) -> Path | None:
    """The final model of the training this visualization depends on, its checksums verified."""
    from worker.experiments.checkpoints import model_path_of

    with ctx.db.session(readonly=True) as s:
        source = next((d for d in repo.dependencies_of(s, ctx.run_id) if d.kind == RunKind.TRAIN), None)
        if source is not None:
            source = repo.results_source(s, source)
    if source is None:
        return None
    if not source.checkpoint:
        raise ArtifactError(ctx.store.run_dir(source.id), f"training {source.id} recorded no checkpoint")
    return model_path_of(verified_checkpoint(ctx, source.id, source.checkpoint))


def resolve_image(ctx: RunContext, image: str, sha256: str | None = None) -> str:
    """Photos are copied into the artifact store at submit time, so every worker can read them; the
    copy is checked against the sha256 recorded at submit (:class:`ArtifactError` naming it if not)."""
    if image.startswith(ARTIFACT_IMAGE_PREFIX):
        relpath = image[len(ARTIFACT_IMAGE_PREFIX) :]
        if not sha256:
            raise ArtifactError(relpath, "staged without a recorded sha256; submit the plan again")
        return str(ctx.store.local_copy(relpath, sha256))
    return image


def run_visualize(ctx: RunContext) -> None:
    from dataclasses import replace

    from worker.experiments.visualize import visualize

    spec = VisualizeSpec.from_dict(ctx.spec)
    checkpoint = _checkpoint_of_dependency(ctx) if spec.source == "checkpoint" else None
    if spec.source == "checkpoint" and checkpoint is None:
        raise ValueError("source=checkpoint but the run depends on no training run")
    spec = replace(spec, image=resolve_image(ctx, spec.image, spec.image_sha256))
    weights_dir = _weights_dir(ctx, spec.alpha, needed=spec.source == "imagenet")
    result = visualize(spec, checkpoint=checkpoint, weights_dir=weights_dir, should_stop=ctx.should_stop)
    ctx.save_bytes("input.png", _png(result.input_image), ArtifactKind.IMAGE)
    for layer, picture in result.layers.items():
        ctx.save_bytes(f"{layer}.png", _png(picture), ArtifactKind.IMAGE)
    summary = {"activation_before": result.activation_before, "activation_after": result.activation_after}
    ctx.save_bytes("result.json", json.dumps(summary, indent=2).encode(), ArtifactKind.LOG)


def run_report(ctx: RunContext) -> None:
    from report.build import render_report
    from report.data import load_report_data

    spec = ReportSpec.from_dict(ctx.spec)
    # A snapshot in a short read-only transaction; figures are drawn after it ended, so a slow report
    # never holds a lock a training needs.
    with ctx.db.session(readonly=True) as s:
        data = load_report_data(s, ctx.store, spec.sweep_id)
    report_rel = f"{ctx.attempt_dir()}/report"
    out_dir = ctx.store.scratch_folder(report_rel)

    def before_figure() -> None:
        if ctx.should_stop():
            raise StopRequested("report stopped on request")

    result = render_report(data, out_dir, before_figure=before_figure)
    for path in result.paths:
        relpath = f"{report_rel}/{Path(path).relative_to(out_dir).as_posix()}"
        kind = ArtifactKind.REPORT if relpath.endswith((".html", ".md")) else ArtifactKind.FIGURE
        ctx.register_file(relpath, kind)


def publish_report(ctx: RunContext) -> None:
    """Copy the report to ``sweeps/<sweep>/report/``, where users and the docs look for it.

    Called only after the attempt's fenced finish succeeded: a superseded attempt can never finish, so
    it can never publish an older snapshot over the winner's report.
    """
    spec = ReportSpec.from_dict(ctx.spec)
    with ctx.db.session(readonly=True) as s:
        files = [(a.path, a.sha256) for a in repo.artifacts_of(s, ctx.run_id)]
    target = ctx.store.sweep_report_dir(spec.sweep_id)
    for relpath, sha256 in files:
        name = relpath.rsplit("/", 1)[-1]
        # The published copy is the one key rewritten: each report of the sweep replaces the last.
        ctx.store.write_file(f"{target}/{name}", ctx.store.local_copy(relpath, sha256), replace=True)


RUNNERS: dict[RunKind, Callable[[RunContext], None]] = {
    RunKind.TRAIN: run_train,
    RunKind.VISUALIZE: run_visualize,
    RunKind.REPORT: run_report,
}
# What a run does once its success is recorded (never before: see publish_report).
AFTER_SUCCESS: dict[RunKind, Callable[[RunContext], None]] = {RunKind.REPORT: publish_report}
