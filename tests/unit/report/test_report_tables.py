"""The results table: statistics over seeds, seed comparison, conclusions, profile wording."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from report import build_report
from report.data import load_report_data
from report.tables import results_table
from storage.folder_store import FolderStore
from tests.unit.report.sweeps import MakeSweep, complete_sweep


def _table(db: sessionmaker[Session], root: Path):  # noqa: ANN202 - test helper
    with db() as session:
        return results_table(load_report_data(session, FolderStore(root)))


@pytest.mark.parametrize(
    ("finals", "beats", "near"),
    [
        ({"scratch": 0.35, "imagenet": 0.78, "finetune": 0.76}, True, True),  # the seed's findings
        ({"scratch": 0.60, "imagenet": 0.55, "finetune": 0.45}, False, False),  # neither holds
        ({"scratch": 0.30, "imagenet": 0.78, "finetune": 0.70}, True, False),  # FT 8 points short
        ({"scratch": 0.30, "imagenet": 0.70, "finetune": 0.745}, True, True),  # within 5 points
    ],
)
def test_conclusions_on_crafted_numbers(
    make_sweep: MakeSweep,
    db: sessionmaker[Session],
    artifacts_root: Path,
    finals: dict[str, float],
    beats: bool,
    near: bool,
) -> None:
    b = make_sweep()
    for regime, final in finals.items():
        b.train(regime, 0, epochs=30, final=final)
    b.session.commit()
    table = _table(db, artifacts_root)
    by_claim = {c.claim: c for c in table.conclusions}
    assert by_claim["ImageNet init beats random init"].holds is beats
    assert by_claim["FT ends near ImageNet"].holds is near
    assert by_claim["FT ends near ImageNet"].verdict == ("holds" if near else "does not hold")


def test_exact_conclusions_use_final_epoch_values(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    from sqlalchemy import update

    from storage.models import EpochMetric

    b = make_sweep()
    runs = {r: b.train(r, 0, epochs=4) for r in ("scratch", "imagenet", "finetune")}
    for regime, value in (("scratch", 0.50), ("imagenet", 0.50), ("finetune", 0.55)):
        b.session.execute(
            update(EpochMetric)
            .where(EpochMetric.run_id == runs[regime].id, EpochMetric.epoch == 4)
            .values(val_accuracy=value)
        )
    b.session.commit()
    table = _table(db, artifacts_root)
    beats, near = table.conclusions
    assert beats.holds is False  # equal is not "beats"
    assert near.holds is True  # exactly 5 points is "near"


def test_stats_over_seeds_and_seed_difference(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep()
    for seed, final in enumerate((0.30, 0.35, 0.40)):
        b.train("scratch", seed, epochs=10, final=final)
    b.session.commit()
    (row,) = _table(db, artifacts_root).rows
    assert row.final is not None and row.final.n == 3
    assert row.final.mean == pytest.approx(35.0, abs=1.0)
    assert row.final.std == pytest.approx(5.0, abs=1.0)
    assert row.diff_points == pytest.approx(row.final.mean - 35.4)
    assert row.epochs_done == 30 and row.epochs_total == 30
    assert row.seconds == pytest.approx(300.0)  # finished - started
    assert row.images_per_second == pytest.approx(1650.0)
    assert row.devices == ("cpu:0",)


def test_paper_profile_is_comparable(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    complete_sweep(make_sweep(profile="paper"), epochs=6)
    table = _table(db, artifacts_root)
    assert table.comparable and "directly comparable" in table.note


@pytest.mark.parametrize(("profile", "overrides"), [("quick", {}), ("smoke", {}), ("paper", {"epochs": "3"})])
def test_other_profiles_say_the_comparison_is_indicative(
    make_sweep: MakeSweep,
    db: sessionmaker[Session],
    artifacts_root: Path,
    profile: str,
    overrides: dict[str, str],
) -> None:
    complete_sweep(make_sweep(profile=profile, overrides=overrides), epochs=6)
    table = _table(db, artifacts_root)
    assert not table.comparable
    assert "indicative" in table.note
    if profile != "paper":
        assert f"Profile '{profile}'" in table.note and "NOT comparable" in table.note
    with db() as session:
        result = build_report(session, FolderStore(artifacts_root))
    for text in (result.html.read_text(), result.markdown.read_text()):
        assert "(indicative)" in text
        assert "holds" in text  # the qualitative findings are still stated


def test_missing_or_running_regime_is_not_judged(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path
) -> None:
    b = make_sweep()
    b.train("scratch", 0, epochs=5)
    running = b.train("imagenet", 0, epochs=5, done=2, status="running")
    b.session.commit()
    table = _table(db, artifacts_root)
    beats, near = table.conclusions
    # A running run's values so far are shown (flagged partial) but no conclusion stands on them.
    assert beats.holds is None and beats.verdict == "not judged"
    assert f"ImageNet init is unfinished ({running.id} running, 2 of 5 epochs so far)" in beats.detail
    assert near.holds is None and "fine-tuning has no run in this sweep" in near.detail
    imagenet = next(r for r in table.rows if r.regime == "imagenet")
    assert imagenet.partial and imagenet.epochs_done == 2
