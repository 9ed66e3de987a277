"""Experiments: pure Keras 3 + numpy (data, models, training regimes, visualizations).

Deliberately empty: importing this package must not import Keras, so callers can import
only the submodules they need (``worker.experiments.errors`` is free of Keras).
"""
