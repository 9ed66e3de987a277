"""The settings table: every effective value of the sweep's runs, and where each came from.

Values are read from the runs' stored specs and recorded environments, never re-derived from a profile:
the profile and ``--set`` overrides only say where a value came from (``profile quick``; ``--set epochs=4``,
marked as an override, with the profile's value; ``plan explain`` for what the plan itself changed). When
runs differ, the value cell lists each value with the runs that have it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from contract.profiles import PROFILES, resolve_profile
from contract.specs import ImageKind, Regime, SpecError
from contract.wording import counted
from report import captions
from report.data import ReportData, RunInfo, TrainRun, VisRun
from storage.models import RunKind

CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class Setting:
    name: str
    value: str
    source: str
    overridden: bool = False  # a --set override decided (part of) the value


@dataclass(frozen=True)
class SettingsTable:
    groups: tuple[tuple[str, tuple[Setting, ...]], ...]  # (heading, rows)

    @property
    def rows(self) -> tuple[Setting, ...]:
        return tuple(row for _, rows in self.groups for row in rows)


def number(value: float) -> str:
    """1e-4 rather than 0.0001; 0.25 as is."""
    if value and abs(value) < 0.01:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}"


def count(value: int | None, total: int, what: str) -> str:
    if value is None or value >= total:
        return f"all {total:,} {what}"
    return f"{value:,} (class-balanced subset of the {total:,} {what})"


@dataclass(frozen=True)
class _Origins:
    """Where a value came from: the sweep's profile, its overrides, or the plan."""

    profile: str
    plan: str
    base: Mapping[str, Any]
    resolved: Mapping[str, Any]
    overrides: Mapping[str, Any]

    @classmethod
    def of(cls, data: ReportData) -> _Origins:
        sweep = data.sweep
        base = PROFILES.get(sweep.profile, {})
        try:
            resolved = resolve_profile(sweep.profile, {k: str(v) for k, v in sweep.overrides.items()})
        except SpecError:  # a profile renamed since: values are still shown, their origin less precisely
            resolved = dict(base)
        return cls(sweep.profile, sweep.plan, base, resolved, dict(sweep.overrides))

    def source(self, value: Any, keys: Iterable[str]) -> tuple[str, bool]:
        """The first of ``keys`` (profile keys) whose effective value is ``value``."""
        for key in keys:
            if key not in self.resolved or not _same(value, self.resolved[key]):
                continue
            if key in self.overrides:
                was = self.base.get(key)
                return f"--set {key}={self.overrides[key]} (profile {self.profile}: {_plain(was)})", True
            return f"profile {self.profile}", False
        return f"plan {self.plan}", False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return bool(a == b)


def _plain(value: Any) -> str:
    if value is None:
        return "all"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


# One row: (name, profile keys that may have set it, how to read a run's value as (text, raw value), or
# None where the setting does not apply). A reader indexes the spec: a field missing from a stored spec
# (KeyError) reads "not recorded", so a default is never shown as if it had been used.
_Reader = Callable[[Mapping[str, Any]], tuple[str, Any] | None]
_Row = tuple[str, tuple[str, ...], _Reader]


def _epochs(spec: Mapping[str, Any]) -> tuple[str, Any]:
    if spec["regime"] == Regime.FINETUNE:
        head, tune = spec["head_epochs"], spec["tune_epochs"]
        return f"{head} head only + {tune} whole network", (head, tune)
    return str(spec["epochs"]), spec["epochs"]


def _lr(spec: Mapping[str, Any]) -> tuple[str, Any]:
    if spec["regime"] == Regime.FINETUNE:
        return f"{number(spec['lr'])}, then {number(spec['tune_lr'])} once unfrozen", None
    return number(spec["lr"]), spec["lr"]


def _size(spec: Mapping[str, Any]) -> tuple[str, Any]:
    n = int(spec["input_size"])
    return (f"{n}×{n} (CIFAR-10 as is)" if n == 32 else f"{n}×{n} (CIFAR-10 upscaled, bilinear)"), n


def _bn(spec: Mapping[str, Any]) -> tuple[str, Any] | None:
    if spec["regime"] != Regime.FINETUNE:
        return None
    mode = spec.get("tune_bn", "batch")  # left out of stored specs at its default
    if mode == "frozen":
        return "frozen: ImageNet statistics, inference mode", mode
    return "trains: batch statistics, moving averages updated (the seed's way)", mode


def _augment(spec: Mapping[str, Any]) -> tuple[str, Any]:
    on = bool(spec.get("augment", False))  # left out of stored specs at its default
    return ("random shift of up to 4 px + horizontal flip" if on else "none"), on


def _weights(spec: Mapping[str, Any]) -> tuple[str, Any]:
    scratch = spec["regime"] == Regime.SCRATCH
    return ("random (Keras's initializers)" if scratch else "ImageNet (Keras's MobileNet v1)"), None


def _limit(key: str, total: int, what: str) -> _Reader:
    return lambda s: (count(s[key], total, what), s[key])


def _plain_field(key: str, text: Callable[[Any], str] = str) -> _Reader:
    return lambda s: (text(s[key]), s[key])


_TRAIN_ROWS: tuple[_Row, ...] = (
    ("MobileNet width (alpha)", ("alpha",), _plain_field("alpha", number)),
    ("Network input", ("input_size", "explain_input_size"), _size),
    ("Training images", ("train_limit",), _limit("train_limit", CIFAR_TRAIN, "training images")),
    ("Validation images (test split)", ("val_limit",), _limit("val_limit", CIFAR_TEST, "test images")),
    ("Batch size", ("batch_size",), _plain_field("batch_size")),
    ("Epochs", ("epochs", "head_epochs", "tune_epochs"), _epochs),
    ("Learning rate (Adam)", ("lr", "tune_lr"), _lr),
    ("BatchNorm once the base is unfrozen (FT)", ("tune_bn",), _bn),
    ("Augmentation", ("augment",), _augment),
    ("Initial weights", (), _weights),
)


def _train_source(
    origins: _Origins, name: str, keys: tuple[str, ...], spec: Mapping[str, Any], raw: Any
) -> tuple[str, bool]:
    if not keys:
        return "regime", False
    if name == "Epochs" and spec.get("regime") == Regime.FINETUNE:
        parts = [origins.source(spec.get(k), (k,)) for k in ("head_epochs", "tune_epochs")]
        return _merge(parts)
    if name.startswith("Learning rate") and spec.get("regime") == Regime.FINETUNE:
        return _merge([origins.source(spec.get(k), (k,)) for k in ("lr", "tune_lr")])
    if name == "Epochs":
        return origins.source(raw, ("epochs",))
    return origins.source(raw, keys)


def _merge(parts: list[tuple[str, bool]]) -> tuple[str, bool]:
    texts = list(dict.fromkeys(text for text, _ in parts))
    return "; ".join(texts), any(flag for _, flag in parts)


def _run_name(run: RunInfo, label: str, several_seeds: bool) -> str:
    return f"{label} (seed {run.seed})" if several_seeds else label


def _grouped(name: str, cells: list[tuple[str, str, str, bool]]) -> Setting:
    """cells: (run name, value text, source, overridden) -> one row; values that differ are listed."""
    by_value: dict[str, list[str]] = {}
    sources: dict[str, bool] = {}
    for run_name, value, source, overridden in cells:
        by_value.setdefault(value, []).append(run_name)
        sources[source] = sources.get(source, False) or overridden
    if len(by_value) == 1:
        value = next(iter(by_value))
    else:
        value = "; ".join(f"{', '.join(names)}: {text}" for text, names in by_value.items())
    return Setting(name, value, "; ".join(sources), any(sources.values()))


def _training(data: ReportData, origins: _Origins) -> tuple[Setting, ...]:
    runs: list[TrainRun] = list(data.trainings)
    if not runs:
        return ()
    several = len({t.run.seed for t in runs}) > 1
    rows = []
    for name, keys, read in _TRAIN_ROWS:
        cells = []
        for t in runs:
            spec = t.run.spec
            try:
                found = read(spec)
            except KeyError:
                cells.append((_run_name(t.run, t.label, several), NOT_RECORDED, "run spec", False))
                continue
            if found is None:
                continue
            text, raw = found
            source, overridden = _train_source(origins, name, keys, spec, raw)
            cells.append((_run_name(t.run, t.label, several), text, source, overridden))
        if cells:
            rows.append(_grouped(name, cells))
    seeds = sorted({t.run.seed for t in runs})
    rows.append(
        Setting("Seeds", ", ".join(map(str, seeds)), "--seed, --seeds (one run per seed and training)")
    )
    rows.append(
        Setting(
            "Optimizer, loss, metric",
            "Adam; categorical cross-entropy; categorical accuracy, validated after every epoch",
            "engine (fixed, as the seed)",
        )
    )
    return tuple(rows)


def _vis_rows(v: VisRun) -> list[tuple[str, tuple[str, ...], str, Any]]:
    spec = v.run.spec

    def field(key: str, text: Callable[[Any], str]) -> tuple[str, Any]:
        return (text(spec[key]), spec[key]) if key in spec else (NOT_RECORDED, None)

    return [
        ("Start image", (), captions.start_image(spec), None),
        ("Network visualized", (), captions.model(v), None),
        ("Ascent input size", ("vis_input_size",), *field("input_size", lambda n: f"{n}×{n}")),
        ("Ascent steps", ("vis_steps",), *field("steps", str)),
        ("Ascent step size (L2-normalized gradient)", ("vis_step_size",), *field("step_size", number)),
        ("Layers (mean activation maximized)", ("vis_layers",), *field("layers", ", ".join)),
    ]


def _visualization(data: ReportData, origins: _Origins) -> tuple[Setting, ...]:
    runs = [v for vs in data.visualizations.values() for v in vs]
    if not runs:
        return ()
    table: dict[str, list[tuple[str, str, str, bool]]] = {}
    for v in runs:
        for name, keys, text, raw in _vis_rows(v):
            source, overridden = origins.source(raw, keys) if keys else ("run spec", False)
            if name == "Start image":
                source = (
                    "--image (default: the shipped dog.jpg)" if v.image_kind == ImageKind.PHOTO else "plan"
                )
            elif name == "Network visualized":
                source = "plan (the training it depends on)" if v.model is not None else "--source"
            table.setdefault(name, []).append((v.image_kind, text, source, overridden))
    return tuple(_grouped(name, cells) for name, cells in table.items())


def _recorded(runs: Iterable[RunInfo], read: Callable[[RunInfo], str | None]) -> str:
    seen = list(dict.fromkeys(v for v in (read(r) for r in runs) if v))
    return "; ".join(seen) if seen else NOT_RECORDED


def _framework(run: RunInfo) -> str | None:
    env = run.environment
    keras, backend = env.get("keras_version"), env.get("keras_backend")
    if not keras and not backend:
        return None
    version = env.get(f"{backend}_version")
    return f"Keras {keras or '?'} on {backend or '?'}{f' {version}' if version else ''}"


def _environment(data: ReportData) -> tuple[Setting, ...]:
    runs = [r for r in data.all_runs if r.kind in (RunKind.TRAIN, RunKind.VISUALIZE)]
    if not runs:
        return ()
    precision = _recorded(runs, lambda r: r.environment.get("dtype_policy"))
    if precision == NOT_RECORDED:
        precision = (
            "not recorded by the workers; the engine sets no dtype policy, so Keras's default (float32)"
        )
    devices: dict[str, int] = {}
    for r in runs:
        if r.device:
            devices[r.device] = devices.get(r.device, 0) + 1
    device_text = "; ".join(f"{d} ({counted(n, 'run')})" for d, n in devices.items()) or NOT_RECORDED
    return (
        Setting("Framework", _recorded(runs, _framework), "recorded by the worker"),
        Setting("Precision", precision, "engine" if precision.startswith("not recorded") else "worker"),
        Setting("Device", device_text, "recorded by the worker"),
        Setting("Python", _recorded(runs, lambda r: r.environment.get("python")), "recorded by the worker"),
        _code(data, runs),
    )


def _code(data: ReportData, runs: list[RunInfo]) -> Setting:
    """The code submit hashed; and the workers' own, where they record it (``environment["code"]``) and
    it differs: a worker elsewhere may run other code than the submitting machine."""
    submitted = data.sweep.code_version or NOT_RECORDED
    ran = [
        c for c in dict.fromkeys(str(r.environment.get("code") or "") for r in runs) if c and c != submitted
    ]
    if ran:
        return Setting(
            "Code", f"{submitted}; the workers ran {', '.join(ran)}", "submit; recorded by the worker"
        )
    return Setting("Code", submitted, "submit (hash of the installed source)")


def settings_table(data: ReportData) -> SettingsTable:
    origins = _Origins.of(data)
    groups = [
        ("Training", _training(data, origins)),
        ("Visualization", _visualization(data, origins)),
        ("Environment", _environment(data)),
    ]
    return SettingsTable(groups=tuple((heading, rows) for heading, rows in groups if rows))
