"""Issue 14's report: settings table, captions that name what they show, failures once, Beyond the seed."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from contract.profiles import resolve_profile
from contract.specs import TrainSpec
from orchestrator.plans import EXPLAIN_VARIANTS, plan_explain, train_spec
from report import build_report
from report.build import ReportResult
from report.data import load_report_data
from report.settings import settings_table
from storage.folder_store import FolderStore
from storage.models import EpochMetric
from tests.unit.report.sweeps import MakeSweep, SweepBuilder, complete_sweep


def _text(html: str) -> str:
    """The page's text without the embedded images (whose base64 could contain anything)."""
    return re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', html)


def _build(db: sessionmaker[Session], root: Path) -> ReportResult:
    with db() as session:
        return build_report(session, FolderStore(root))


def _spec(profile: dict[str, object], regime: str, seed: int = 0) -> dict[str, object]:
    return train_spec(profile, regime, seed).to_dict()


def _quick_sweep_with_override(make_sweep: MakeSweep) -> tuple[SweepBuilder, dict[str, object]]:
    """A quick sweep submitted with --set epochs=4, as plan_all would make it."""
    profile = resolve_profile("quick", {"epochs": "4"})
    b = make_sweep(profile="quick", overrides={"epochs": "4"})
    for regime in ("scratch", "imagenet", "finetune"):
        spec = _spec(profile, regime)
        b.train(regime, 0, epochs=int(TrainSpec.from_dict(spec).total_epochs), spec_extra=spec)
    return b, profile


VIS_SPEC = {"input_size": 128, "steps": 50, "step_size": 10.0, "alpha": 0.25, "source": "checkpoint"}


def test_settings_table_lists_every_effective_value_and_marks_overrides(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b, _ = _quick_sweep_with_override(make_sweep)
    model = next(r for r in b.runs if r.label == "imagenet")
    model.environment = {
        "keras_version": "3.15.1",
        "keras_backend": "tensorflow",
        "tensorflow_version": "2.21.0",
    }
    b.visualize("random", model=model, spec_extra=VIS_SPEC)
    b.session.commit()
    with db() as session:
        table = settings_table(load_report_data(session, FolderStore(artifacts_root)))
    rows = {row.name: row for row in table.rows}
    assert [heading for heading, _ in table.groups] == ["Training", "Visualization", "Environment"]
    expected = {
        "MobileNet width (alpha)": "0.25",
        "Network input": "32×32 (CIFAR-10 as is)",
        "Training images": "10,000 (class-balanced subset of the 50,000 training images)",
        "Validation images (test split)": "2,000 (class-balanced subset of the 10,000 test images)",
        "Batch size": "32",
        "Epochs": "scratch, imagenet: 4; finetune: 2 head only + 4 whole network",
        "Learning rate (Adam)": "scratch, imagenet: 1e-4; finetune: 1e-4, then 1e-5 once unfrozen",
        "BatchNorm once the base is unfrozen (FT)": "trains: batch statistics, moving averages updated "
        "(the seed's way)",
        "Augmentation": "none",
        "Seeds": "0",
        "Ascent input size": "128×128",
        "Ascent steps": "50",
        "Ascent step size (L2-normalized gradient)": "10",
        "Layers (mean activation maximized)": "conv_pw_12, conv_pw_13",
        "Framework": "Keras 3.15.1 on tensorflow 2.21.0",
    }
    for name, value in expected.items():
        assert rows[name].value == value, name
    assert "uniform random values 0-255 in each RGB channel (seed 0), 128×128" in rows["Start image"].value
    assert f"trained by run {model.id}" in rows["Network visualized"].value
    assert "float32" in rows["Precision"].value and "not recorded" in rows["Precision"].value
    assert rows["Device"].value.startswith("cpu:0")
    assert rows["Code"].value == "git:abc1234"  # no worker recorded other code
    # The override is marked, with the profile's own value; what the profile gave is not.
    epochs = rows["Epochs"]
    assert epochs.overridden and "--set epochs=4 (profile quick: 6)" in epochs.source
    assert not rows["Batch size"].overridden and rows["Batch size"].source == "profile quick"

    result = _build(db, artifacts_root)
    html, md = _text(result.html.read_text()), result.markdown.read_text()
    assert html.index("<h2>Settings</h2>") < html.index("<h2>Exercise 3")
    assert re.search(r'<td class="override">[^<]*--set epochs=4 \(profile quick: 6\)', html)
    assert "| Epochs | ✱ scratch, imagenet: 4;" in md


def test_a_value_missing_from_an_old_spec_reads_not_recorded(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep()
    b.train("scratch", 0, epochs=5)  # the fixture's spec holds regime, seed and epochs only
    b.session.commit()
    with db() as session:
        rows = {
            r.name: r for r in settings_table(load_report_data(session, FolderStore(artifacts_root))).rows
        }
    assert rows["MobileNet width (alpha)"].value == "not recorded"
    assert rows["Epochs"].value == "5"


def test_captions_name_the_model_the_layers_and_the_input(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b, _ = _quick_sweep_with_override(make_sweep)
    model = next(r for r in b.runs if r.label == "imagenet")
    ups = {"conv_pw_12": (0.031, 2.5), "conv_pw_13": (0.4, 0.3)}
    b.visualize("random", model=model, spec_extra=VIS_SPEC, activations=ups)
    b.visualize("sine", model=model, spec_extra=VIS_SPEC, activations=ups)
    photo_spec = dict(
        VIS_SPEC, image="artifact:inputs/5a95.jpg", image_name="dog.jpg", image_sha256="5a95" * 16
    )
    b.visualize("photo", model=model, spec_extra=photo_spec, activations=ups)
    b.session.commit()
    result = _build(db, artifacts_root)
    for text in (_text(result.html.read_text()), result.markdown.read_text()):
        assert "uniform random values 0-255 in each RGB channel (seed 0), 128×128 pixels" in text
        assert "sinusoids in the RGB channels" in text
        assert "the photo dog.jpg (sha256 5a955a95…), resized to 128×128 pixels" in text
        for n in (4, 6, 8):
            caption = re.split(rf"Fig\. {n}:(?:</b>|\*\*)", text)[1][:700]
            assert (
                "conv_pw_12 (antepenultimate convolutional layer, left) and conv_pw_13 (last, right)"
                in caption
            )
            assert f"the model trained by run {model.id} (ImageNet init, alpha 0.25, 32×32 inputs" in caption
            assert "50 steps of size 10" in caption
        assert "Fig. 3 (50 steps" in text and "Fig. 7 (50 steps" in text
        # The ascent's effect, from result.json: a rise, and a fall said plainly.
        assert text.count("conv_pw_12 0.031 → 2.5 (rose)") == 3
        assert text.count("conv_pw_13 0.4 → 0.3 (did NOT rise)") == 3


def test_an_all_failed_sweep_lists_each_error_once_with_its_count(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    weights = "WeightsError: mobilenet_1_0_224_tf_no_top.h5 not found in /data/weights"
    dependency = "dependency r-x failed"
    b = make_sweep()
    for regime in ("scratch", "imagenet", "finetune"):
        b.train(regime, 0, epochs=60, done=0, status="failed", error=weights)
    for kind in ("random", "sine", "photo"):
        b.visualize(kind, status="failed", error=dependency)
    b.session.commit()
    result = _build(db, artifacts_root)
    for text in (_text(result.html.read_text()), result.markdown.read_text()):
        assert text.count(weights) == 1 and text.count(dependency) == 1
        assert "Error 1** — 3 runs failed" in text or "Error 1</b> — 3 runs failed" in text
        assert "Error 2** — 3 runs failed" in text or "Error 2</b> — 3 runs failed" in text
        assert "Figs. 1, 2, 3, 4, 5, 6, 7, 8 are placeholders" in text
        assert text.count("(error 1 under Failures)") == 6  # Figs. 1-2 name the three trainings each
    assert len([w for w in result.warnings if "placeholder" in w]) == 8  # the CLI still lists each


def test_differences_to_the_seed_only_for_the_paper_profile(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path, tmp_path: Path
) -> None:
    complete_sweep(make_sweep("s-quick", profile="quick"), epochs=6)
    with db() as session:
        quick = build_report(session, FolderStore(artifacts_root), "s-quick", tmp_path / "q").html.read_text()
    assert "Δ final vs seed" not in quick and "Seed reports" not in quick
    assert "35.4 % after 60 epochs" not in quick
    assert "NOT comparable and are not shown" in quick
    complete_sweep(make_sweep("s-paper", profile="paper"), epochs=6)
    with db() as session:
        paper = build_report(session, FolderStore(artifacts_root), "s-paper", tmp_path / "p").html.read_text()
    assert "Δ final vs seed (points)" in paper and "35.4 % after 60 epochs" in paper


def test_finetune_curves_say_why_they_look_odd_with_the_numbers(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    """Below chance while only the head trains, and the loss jump when BatchNorm starts training."""
    from sqlalchemy import update

    b = make_sweep(profile="quick")
    ft = b.train("finetune", 0, epochs=6, spec_extra={"input_size": 32})
    for epoch, loss, val in ((1, 2.47, 0.068), (2, 2.38, 0.079), (3, 4.43, 0.119)):
        b.session.execute(
            update(EpochMetric)
            .where(EpochMetric.run_id == ft.id, EpochMetric.epoch == epoch)
            .values(loss=loss, val_accuracy=val)
        )
    b.session.commit()
    result = _build(db, artifacts_root)
    text = _text(result.html.read_text())
    fig1, fig2 = text.split('id="fig1_accuracy"')[1], text.split('id="fig2_loss"')[1]
    assert "during the head-only phase (epochs 1-2) validation accuracy stays at 6.8-7.9 %" in fig1
    assert "last feature map is 1×1" in fig1
    assert "the training loss jumps from 2.38 (epoch 2, last head-only) to 4.43 (epoch 3)" in fig2
    assert "batch statistics" in fig2.split("</p>")[0] or "statistics of each batch" in fig2


def _explain_sweep(make_sweep: MakeSweep) -> SweepBuilder:
    """The runs plan_explain makes for the smoke profile, with made-up curves."""
    b = make_sweep(plan="explain", profile="smoke")
    finals = {"scratch": 0.3, "imagenet": 0.5, "finetune": 0.4}
    for planned in plan_explain(resolve_profile("smoke"), seeds=1, base_seed=0).runs:
        spec = TrainSpec.from_dict(planned.spec)
        final = finals.get(planned.label, 0.6 if spec.input_size > 32 else 0.45)
        b.train(spec.regime, 0, epochs=8, final=final, spec_extra=planned.spec, label=planned.label)
    b.session.commit()
    return b


def test_explain_runs_appear_in_a_beyond_the_seed_section(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    _explain_sweep(make_sweep)
    with db() as session:
        data = load_report_data(session, FolderStore(artifacts_root))
    assert set(data.train) >= {"scratch", "imagenet", "finetune"}
    assert list(data.variants) == [v.label for v in EXPLAIN_VARIANTS]
    result = _build(db, artifacts_root)
    names = {p.name for p in result.figures}
    assert {"fig9_beyond_accuracy.png", "fig10_beyond_loss.png", "fig1_accuracy.png"} <= names
    assert not any(n.startswith(("fig3", "fig8")) for n in names), "an explain sweep has no Exercise 4"
    for text in (_text(result.html.read_text()), result.markdown.read_text()):
        assert "Beyond the seed" in text and "Exercise 4" not in text
        for variant in EXPLAIN_VARIANTS:
            assert variant.label in text
        assert "BatchNorm frozen once the base is unfrozen" in text
        assert "inputs upscaled 32×32 → 48×48" in text
        # Fig. 1 shows the seed's three regimes only; the variants are in Fig. 9.
        assert "Best run of this sweep: imagenet+upscaled" in text
        assert "not tested by this sweep (alpha 0.25, 300 training images)" in text
        assert "+10.0" in text  # imagenet+upscaled: 60 % against imagenet's 50 %
    with db() as session:
        from report.figures import accuracy_figure

        labels = [
            str(line.get_label())
            for line in accuracy_figure(load_report_data(session, FolderStore(artifacts_root)))
            .figure.axes[0]
            .get_lines()
        ]
    assert not any("+" in label for label in labels)


def test_embedded_figures_are_sized_for_the_page(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    """Noise-like 128x128 pictures (what gradient ascent produces) keep report.html small; the PNG and PDF
    files on disk keep the figure as drawn."""
    b = make_sweep(profile="quick")
    for regime in ("scratch", "imagenet", "finetune"):
        b.train(regime, 0, epochs=6)
    for kind in ("random", "sine", "photo"):
        b.visualize(kind, size=128)
    b.session.commit()
    result = _build(db, artifacts_root)
    html = result.html.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]*)"', html)
    assert len(embedded) == 8
    on_disk = sum(p.stat().st_size for p in result.figures if p.suffix == ".png")
    assert len(html) < 0.6 * on_disk, (len(html), on_disk)
    for data in embedded:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert img.width <= 900
    assert len(html) < 900_000


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_report_of_a_quick_sweep_has_settings_before_results(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path, profile: str
) -> None:
    complete_sweep(make_sweep(profile=profile), epochs=6)
    md = _build(db, artifacts_root).markdown.read_text()
    assert md.index("## Settings") < md.index("## Exercise 3") < md.index("### Results")


def test_code_a_worker_recorded_is_shown_when_it_differs_from_the_submitted_code(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep()
    run = b.train("scratch", 0, epochs=3)
    run.environment = {"code": "0.1.0+src.0123456789ab"}
    b.session.commit()
    with db() as session:
        rows = {
            r.name: r for r in settings_table(load_report_data(session, FolderStore(artifacts_root))).rows
        }
    assert rows["Code"].value == "git:abc1234; the workers ran 0.1.0+src.0123456789ab"
