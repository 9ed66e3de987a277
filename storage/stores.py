"""The artifact store a deployment uses, from its settings: the one place that chooses a backend."""

from __future__ import annotations

from contract.settings import Settings
from storage.artifacts import ArtifactStore
from storage.folder_store import FolderStore


def open_store(settings: Settings) -> ArtifactStore:
    """The folder ``$CONVLAB_HOME/artifacts`` (or a ``file://`` URL's) unless ``CONVLAB_ARTIFACTS_URL``
    names an object store. Opening connects to nothing: :meth:`ArtifactStore.check_access` does."""
    if not settings.artifacts_in_object_store:
        return FolderStore(settings.artifacts_dir)
    from storage.object_store import ObjectStore  # obstore is imported only where it is used

    assert settings.artifacts_url is not None
    return ObjectStore(
        settings.artifacts_url,
        cache_dir=settings.artifact_cache_dir,
        scratch_dir=settings.scratch_dir,
        cache_limit_bytes=int(settings.cache_limit_mb * 1024 * 1024),
    )
