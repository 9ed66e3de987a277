"""What the tests need from the machine: services and tools that skip locally and fail in CI when missing."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(what: str, reason: str, *, ci_hint: str = "services must be running") -> None:
    """Skip with the reason locally; in CI a missing service is a failure, never a silent skip."""
    message = f"{what} is not available: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: {ci_hint})")
    pytest.skip(message)
