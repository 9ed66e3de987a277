"""Checks made at submit time that would otherwise fail minutes or hours later inside a task.

What can be checked without training: the CIFAR-10 source and the ImageNet weight file of each width the
plan uses (present, or downloadable by Keras), and free disk for the checkpoints. Each failure is a
:class:`UserError` naming the file and the setting: exit 2, before anything is written.

They apply to the workers that read this process's environment: the embedded default, whose local
worker ``submit`` starts itself. A worker on another machine reads its own ``CONVLAB_CIFAR10`` and
``CONVLAB_WEIGHTS_DIR``; ``orchestrator worker`` checks those when it starts (:func:`check_worker_paths`).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from contract.disk import CIFAR_CACHE_BYTES, CIFAR_TARBALL_BYTES, free_bytes
from contract.inputs import CIFAR_FOLDER, weights_file_name
from contract.settings import Settings, is_object_url
from contract.specs import TrainSpec, VisualizeSpec
from orchestrator import host
from orchestrator.errors import UserError
from storage.models import RunKind

WEIGHTS_HOST = "storage.googleapis.com"  # where keras.applications.MobileNet downloads them from
CIFAR_HOST = "www.cs.toronto.edu"  # where keras.datasets.cifar10.load_data() downloads from
# Where Keras 3 keeps CIFAR-10 after load_data() (get_file(fname="cifar-10-batches-py-target", extract)).
KERAS_CIFAR_FOLDER = Path("datasets") / "cifar-10-batches-py-target"
CIFAR_BATCHES = CIFAR_FOLDER

# Disk: MobileNet v1 has about 3.3 million parameters x alpha^2; a checkpoint holds them with Adam's two
# moments (x3, float32), and two checkpoints of a run coexist for a moment (the new one is written
# before the old one is removed). The decoded CIFAR-10 cache's size lives with the engine's rule for it.
_PARAMS_AT_ALPHA_1 = 3.3e6
MARGIN_BYTES = 50_000_000  # figures, visualizations, report, logs, the broker's messages

Work = tuple[RunKind, dict[str, Any], str]  # (kind, spec, label) of a run that will execute


def checkpoint_bytes(alpha: float) -> int:
    return int(_PARAMS_AT_ALPHA_1 * alpha * alpha * 4 * 3 + 1_000_000)


@dataclass
class Needs:
    """What a set of runs reads and writes."""

    cifar_by: list[str] = field(default_factory=list)  # runs that read CIFAR-10
    weights_by: dict[float, list[str]] = field(default_factory=dict)  # alpha -> runs that need its file
    checkpoint_bytes: int = 0


def needs_of(work: Iterable[Work]) -> Needs:
    needs = Needs()
    for kind, spec, label in work:
        if kind == RunKind.TRAIN:
            train = TrainSpec.from_dict(spec)
            needs.cifar_by.append(f"train {label}")
            needs.checkpoint_bytes += 2 * checkpoint_bytes(train.alpha)
            if train.weights == "imagenet":
                needs.weights_by.setdefault(train.alpha, []).append(f"train {label}")
        elif kind == RunKind.VISUALIZE:
            visual = VisualizeSpec.from_dict(spec)
            # A visualization of a trained model ("checkpoint") loads no ImageNet file itself.
            if visual.source == "imagenet":
                needs.weights_by.setdefault(visual.alpha, []).append(f"visualize {label}")
    return needs


def absolute_inputs(settings: Settings) -> Settings:
    """``CONVLAB_CIFAR10`` and ``CONVLAB_WEIGHTS_DIR`` made absolute against the current folder.

    The local worker is started with these, so what was checked here is exactly what it reads.
    """

    def absolute(raw: str | None) -> str | None:
        # An object-store URL is no path: each worker resolves it into its own cache.
        return raw if raw is None or is_object_url(raw) else str(_absolute(raw))

    return replace(
        settings, cifar10_path=absolute(settings.cifar10_path), weights_dir=absolute(settings.weights_dir)
    )


def _absolute(raw: str) -> Path:
    """``raw`` against the current folder, with ``..`` folded (symbolic links are left alone)."""
    return Path(os.path.abspath(Path(raw).expanduser()))


def _as_given(raw: str | None) -> str:
    """How a path setting was written, for messages: a relative one also says where it was resolved."""
    if raw is None:
        return ""
    path = Path(raw).expanduser()
    return "" if path.is_absolute() else f" ({raw!r} taken relative to {Path.cwd()})"


def check_cifar10(raw: str | None, *, keras_dir: Path, can_reach: Callable[[str], bool]) -> None:
    if raw is None:
        cached = keras_dir / KERAS_CIFAR_FOLDER / CIFAR_BATCHES / "test_batch"
        archive = keras_dir / "datasets" / "cifar-10-batches-py-target_archive"
        if cached.is_file() or archive.is_file():
            return
        if not can_reach(CIFAR_HOST):
            raise UserError(
                f"CONVLAB_CIFAR10: not set, CIFAR-10 is not in Keras's cache ({cached.parent}) and "
                f"{CIFAR_HOST} cannot be reached to download it; set CONVLAB_CIFAR10 to "
                "cifar-10-python.tar.gz or its extracted folder"
            )
        return
    path = _absolute(raw)
    where = _as_given(raw)
    if path.is_file():
        try:
            ok = tarfile.is_tarfile(path)
        except OSError as exc:
            raise UserError(f"CONVLAB_CIFAR10: cannot read {path}{where}: {exc.strerror}") from None
        if not ok:
            raise UserError(f"CONVLAB_CIFAR10: {path}{where} is not a tar archive (cifar-10-python.tar.gz)")
        return
    if path.is_dir():
        if any(
            c.is_file()
            for c in (
                path / "test_batch",
                path / CIFAR_BATCHES / "test_batch",
                path / "cifar-10-python.tar.gz",
            )
        ):
            return
        raise UserError(
            f"CONVLAB_CIFAR10: folder {path}{where} holds neither {CIFAR_BATCHES}/ nor cifar-10-python.tar.gz"
        )
    raise UserError(f"CONVLAB_CIFAR10: no such file or folder: {path}{where}")


def check_weights(
    raw: str | None,
    weights_by: dict[float, list[str]],
    *,
    keras_dir: Path,
    can_reach: Callable[[str], bool],
) -> None:
    for alpha, users in sorted(weights_by.items()):
        name = weights_file_name(alpha)
        what = f"the ImageNet weights for alpha {alpha} ({', '.join(dict.fromkeys(users))})"
        if raw is not None:
            folder = _absolute(raw)
            where = _as_given(raw)
            if not folder.is_dir():
                raise UserError(f"CONVLAB_WEIGHTS_DIR: no such folder: {folder}{where}")
            if not (folder / name).is_file():
                raise UserError(
                    f"CONVLAB_WEIGHTS_DIR: {folder / name} not found{where}: {what}; put Keras's file there "
                    "or use a width whose file you have (--set alpha=..., or --profile quick: alpha 0.25)"
                )
            continue
        cached = keras_dir / "models" / name
        if not cached.is_file() and not can_reach(WEIGHTS_HOST):
            raise UserError(
                f"CONVLAB_WEIGHTS_DIR: not set, {cached} is missing and {WEIGHTS_HOST} cannot be reached "
                f"to download it: {what}; set CONVLAB_WEIGHTS_DIR to a folder holding {name}"
            )


def check_disk(settings: Settings, needs: Needs, *, free: Callable[[Path], int] | None = None) -> None:
    if not needs.checkpoint_bytes:
        return
    free = free or free_bytes
    need = needs.checkpoint_bytes + MARGIN_BYTES
    cache = settings.home / "cache"
    if settings.cifar10_path is not None and not any(cache.glob("cifar10-*.npz")):
        need += CIFAR_CACHE_BYTES
        if is_object_url(settings.cifar10_path):
            need += CIFAR_TARBALL_BYTES  # fetched into $CONVLAB_HOME/cache/inputs first
    available = free(settings.home)
    if available < need:
        raise UserError(
            f"CONVLAB_HOME: {settings.home} has {available / 1e6:,.0f} MB free; this plan needs about "
            f"{need / 1e6:,.0f} MB (checkpoints, the decoded CIFAR-10 cache); free space or point "
            "CONVLAB_HOME elsewhere"
        )


def check_local_run(
    settings: Settings,
    work: Iterable[Work],
    *,
    keras_dir: Path | None = None,
    can_reach: Callable[[str], bool] | None = None,
    free: Callable[[Path], int] | None = None,
) -> None:
    """Everything the local worker will need for ``work``: data, weights, disk. Raises UserError."""
    can_reach = can_reach or host.reachable
    needs = needs_of(work)
    keras_dir = keras_dir if keras_dir is not None else host.keras_home()
    if needs.cifar_by:
        if is_object_url(settings.cifar10_path):
            check_remote_inputs(settings, cifar10=True)
        else:
            check_cifar10(settings.cifar10_path, keras_dir=keras_dir, can_reach=can_reach)
    if is_object_url(settings.weights_dir):
        if needs.weights_by:  # a plan that loads no ImageNet file reads nothing there
            names = [weights_file_name(a) for a in sorted(needs.weights_by)]
            check_remote_inputs(settings, weights=True, weight_names=names)
    else:
        check_weights(settings.weights_dir, needs.weights_by, keras_dir=keras_dir, can_reach=can_reach)
    check_disk(settings, needs, free=free)


def check_remote_inputs(
    settings: Settings, *, cifar10: bool = False, weights: bool = False, weight_names: list[str] | None = None
) -> None:
    """The object-store inputs asked for: the store answers with this host's credentials, the bucket
    exists, the objects are there and readable (HEADs and ``.sha256`` reads; nothing downloaded, nothing
    written). ``weight_names`` None: any Keras weight file will do (a worker does not know the widths it
    will run)."""
    from storage import remote_inputs
    from storage.errors import ArtifactError

    try:
        if cifar10 and is_object_url(settings.cifar10_path):
            remote_inputs.check_cifar10(settings)
        if weights and is_object_url(settings.weights_dir):
            remote_inputs.check_weights(settings, weight_names)
    except ArtifactError as exc:
        raise UserError(exc.reason) from None


def check_worker_store(settings: Settings) -> None:
    """At ``orchestrator worker`` start: this host can write, read and delete in the artifact store with
    its credentials (a probe key), so a wrong secret or bucket fails here, not at the first epoch."""
    from storage.errors import ArtifactError
    from storage.stores import open_store

    try:
        open_store(settings).check_access()
    except ArtifactError as exc:
        raise UserError(f"CONVLAB_ARTIFACTS_URL: {exc.reason}") from None


def check_worker_paths(settings: Settings) -> None:
    """At ``orchestrator worker`` start: the data and weights settings it will read name what exists (an
    object-store URL: reachable with this host's credentials, bucket present, objects readable)."""
    check_remote_inputs(settings, cifar10=True, weights=True)  # the settings that are URLs
    if settings.cifar10_path is not None and not is_object_url(settings.cifar10_path):
        check_cifar10(settings.cifar10_path, keras_dir=host.keras_home(), can_reach=lambda _: True)
    if settings.weights_dir is not None and not is_object_url(settings.weights_dir):
        folder = _absolute(settings.weights_dir)
        if not folder.is_dir():
            raise UserError(f"CONVLAB_WEIGHTS_DIR: no such folder: {folder}{_as_given(settings.weights_dir)}")
