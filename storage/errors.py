"""Every error storage raises derives from :class:`StorageError`; the CLI maps them to one-line messages."""

from __future__ import annotations

from typing import Any

from contract.settings import mask_url


class StorageError(Exception):
    """Base class of everything storage raises on purpose."""


class NotFound(StorageError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} not found")
        self.what = what
        self.ident = ident


class IllegalTransition(StorageError):
    def __init__(self, run_id: str, from_status: Any, to_status: Any) -> None:
        frm = getattr(from_status, "value", from_status)
        to = getattr(to_status, "value", to_status)
        super().__init__(f"run {run_id!r}: cannot go from {frm} to {to}")
        self.run_id = run_id
        self.from_status = from_status
        self.to_status = to_status


class ArtifactError(StorageError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"artifact {path!r}: {reason}")
        self.path = path
        self.reason = reason


class StoreUnavailable(ArtifactError):
    """The artifact store could not be reached (or kept failing) within its bounded retries: the store is
    down, not the artifact damaged, so the attempt may be retried later and nothing is to be repaired."""


class DatabaseUnavailable(StorageError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = mask_url(url)
        super().__init__(f"database {self.url} is unavailable: {reason}")
        self.reason = reason


class LeaseLost(StorageError):
    """A write on behalf of a run by an attempt that no longer holds it (taken over, cancelled, finished).

    The attempt must stop at once and touch nothing more: another attempt's results are the run's now.
    """

    def __init__(self, run_id: str, fence: int) -> None:
        super().__init__(f"run {run_id!r}: attempt with fencing token {fence} no longer holds it")
        self.run_id = run_id
        self.fence = fence
