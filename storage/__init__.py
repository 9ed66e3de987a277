"""Persistent state of convlab: settings, database (runs, epochs, artifacts) and the artifact store.

A leaf package: it imports nothing from ``worker`` or ``orchestrator``.
"""
