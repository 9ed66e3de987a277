from __future__ import annotations

from contract.version import code_version


def test_code_version_is_stable_and_never_empty() -> None:
    version = code_version()
    assert version and version == code_version()
    assert version.split("+")[0].count(".") >= 2
