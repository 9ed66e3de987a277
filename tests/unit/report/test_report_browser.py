"""report.html in a real headless Chromium: it renders, every image loads, and nothing leaves the machine.

Skips locally without Chromium; fails when CI=true (a missing browser must not pass silently).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from report import build_report
from storage.folder_store import FolderStore
from tests.services import service_missing
from tests.unit.report.sweeps import MakeSweep, complete_sweep

# Appended to a copy of the report: counts loaded images and any resource fetched from outside the page.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const external = performance.getEntriesByType('resource').map(e => e.name)
    .filter(n => !n.startsWith('data:'));
  document.body.setAttribute('data-images', imgs.length + '/' + ok);
  document.body.setAttribute('data-external', external.join(' ') || 'none');
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    service_missing(
        "headless Chromium",
        "not installed (apt-get install -y chromium)",
        ci_hint="the browser test must run",
    )
    raise AssertionError("unreachable")


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(
    make_sweep: MakeSweep, db: sessionmaker[Session], artifacts_root: Path, tmp_path: Path
) -> None:
    browser = _chromium()
    b = complete_sweep(make_sweep(), epochs=20)
    b.train("finetune", 1, epochs=20, done=4, status="failed", error="boom: worker lost")
    b.session.commit()
    with db() as session:
        result = build_report(session, FolderStore(artifacts_root))

    shot = tmp_path / "shot.png"
    done = _run(
        browser,
        tmp_path / "profile1",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        result.html.as_uri(),
    )
    assert shot.is_file(), f"no screenshot: {done.stderr[-2000:]}"
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.shape == (2000, 1280)
    assert pixels.var() > 100.0, "the screenshot is blank"
    assert (pixels < 128).mean() > 0.01, "hardly any dark pixels: text and figures did not render"

    probe = tmp_path / "probe.html"
    probe.write_text(result.html.read_text().replace("</body>", PROBE + "</body>"))
    dom = _run(browser, tmp_path / "profile2", "--dump-dom", probe.as_uri()).stdout
    images = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert images, f"probe did not run: {dom[:500]}"
    assert images.group(1) == images.group(2) == "8", f"images loaded: {images.group(2)}/{images.group(1)}"
    external = re.search(r'data-external="([^"]*)"', dom)
    assert external and external.group(1) == "none", f"external requests: {external and external.group(1)}"
    assert "boom: worker lost" in dom
