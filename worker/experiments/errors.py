"""One exception hierarchy for the experiments, so callers map them to failed runs / exit codes.

Every message is one line that names the path or field at fault and what is wrong or allowed.
"""

from __future__ import annotations


class ExperimentError(Exception):
    """Base class: an experiment cannot run with the inputs it was given."""


class DataError(ExperimentError):
    """The CIFAR-10 source is missing, truncated or not in the official python-pickle layout."""


class WeightsError(ExperimentError):
    """Pretrained weights are missing or cannot be loaded."""


class LayerError(ExperimentError):
    """A requested layer does not exist in the network (the message lists valid names)."""


class ImageError(ExperimentError):
    """An input image is missing or unreadable."""


class StopRequested(Exception):  # noqa: N818 - not an error: the caller asked to stop
    """Raised inside long work (a visualization's ascent) when ``should_stop`` says so: nothing is kept."""
