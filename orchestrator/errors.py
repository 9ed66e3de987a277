"""The orchestrator's errors and the exit code each maps to at the CLI."""

from __future__ import annotations


class OrchestratorError(Exception):
    exit_code = 1


class UserError(OrchestratorError):
    """Bad input: one line naming the option and what is allowed; exit code 2; nothing written."""

    exit_code = 2


class ServiceUnavailable(OrchestratorError):
    """The broker or the database cannot be reached (URL named, password masked); exit code 1."""

    exit_code = 1


class Interrupted(OrchestratorError):
    """Ctrl-C: the message says what was stopped and how to resume; exit code 130 (128 + SIGINT)."""

    exit_code = 130
