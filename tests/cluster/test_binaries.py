"""Finding toxiproxy-server and libfaketime, and the errors that say how to get them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_operator._binaries import (
    MissingBinaryError,
    find_libfaketime,
    find_toxiproxy_server,
    project_bin_dir,
)


@pytest.fixture
def empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH with nothing on it (no toxiproxy-server, no go)."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def test_path_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    on_path = tmp_path / "on-path"
    on_path.mkdir()
    fake = on_path / "toxiproxy-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path))
    assert find_toxiproxy_server(bin_dir=tmp_path / "unused") == fake


def test_project_bin_dir_is_next(empty_path: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    local = bin_dir / "toxiproxy-server"
    local.write_text("#!/bin/sh\n")
    local.chmod(0o755)
    assert find_toxiproxy_server(bin_dir=bin_dir, install=False) == local


def test_missing_without_go_says_how_to_get_it(empty_path: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    with pytest.raises(MissingBinaryError) as err:
        find_toxiproxy_server(bin_dir=bin_dir)
    assert str(err.value) == (
        f"toxiproxy-server not found on PATH nor in {bin_dir} (Go is not installed, so it "
        f"could not be built). Get it with `./dev setup`, or `GOBIN={bin_dir} go install "
        "github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0` then "
        f"`mv {bin_dir}/server {bin_dir}/toxiproxy-server`, or download a release binary "
        "from https://github.com/Shopify/toxiproxy/releases onto your PATH."
    )


def test_the_real_one_is_found() -> None:
    found = find_toxiproxy_server(install=False)
    assert found.name == "toxiproxy-server"
    assert found == Path(shutil.which("toxiproxy-server") or project_bin_dir() / found.name)


def test_libfaketime_is_found() -> None:
    path = find_libfaketime()
    assert path.name == "libfaketime.so.1" and path.is_file()


def test_libfaketime_missing_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PYTEST_OPERATOR_LIBFAKETIME", raising=False)
    with pytest.raises(MissingBinaryError) as err:
        find_libfaketime((str(tmp_path),))
    assert str(err.value) == (
        f"libfaketime not found (looked for libfaketime.so.1 in {tmp_path}). Install it with "
        "`sudo apt-get install faketime` (or `./dev setup`), or point "
        "PYTEST_OPERATOR_LIBFAKETIME at the library."
    )
