"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_translator import make_translator, save


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a tiny random-weight run, one per test module."""
    return save(make_translator(tmp_path_factory.mktemp("run")))
