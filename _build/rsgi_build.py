"""rsgi's PEP 517 build backend: maturin, except that a build without Rust stops at once.

Recent maturin downloads a Rust toolchain into a temporary directory when it finds no
``cargo``: a surprise (minutes, hundreds of MB) on a machine that only wanted a wheel. This
backend turns that off (``MATURIN_NO_INSTALL_RUST``) and says in one line how to get Rust.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

os.environ.setdefault("MATURIN_NO_INSTALL_RUST", "1")

import maturin  # noqa: E402

NO_RUST = (
    "rsgi: building from source needs Rust (cargo), which is not on PATH: install it from "
    "https://rustup.rs, or install a prebuilt wheel (pip install --only-binary rsgi rsgi)"
)


def _need_rust() -> None:
    if shutil.which("cargo") is None:
        print(NO_RUST, file=sys.stderr)
        raise SystemExit(1)


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    return maturin.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_sdist(config_settings: Any = None) -> list[str]:
    return maturin.get_requires_for_build_sdist(config_settings)


def get_requires_for_build_editable(config_settings: Any = None) -> list[str]:
    return maturin.get_requires_for_build_editable(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Any = None) -> str:
    _need_rust()
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(
    metadata_directory: str, config_settings: Any = None
) -> str:
    _need_rust()
    return maturin.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(
    wheel_directory: str, config_settings: Any = None, metadata_directory: str | None = None
) -> str:
    _need_rust()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str, config_settings: Any = None, metadata_directory: str | None = None
) -> str:
    _need_rust()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory: str, config_settings: Any = None) -> str:
    _need_rust()
    return maturin.build_sdist(sdist_directory, config_settings)
