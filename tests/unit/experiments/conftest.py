"""Fixtures for the engine tests: tiny synthetic CIFAR-10 and fake "ImageNet" weights (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.datagen import write_fake_imagenet_weights, write_tiny_cifar10


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cifar10(tmp_path_factory.mktemp("cifar_dir"))


@pytest.fixture(scope="session")
def cifar_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cifar10(tmp_path_factory.mktemp("cifar_tar"), as_tar=True)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_imagenet_weights(tmp_path_factory.mktemp("weights"), alpha=0.25)
