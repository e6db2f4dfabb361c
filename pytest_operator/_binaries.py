"""Finding (and, where possible, installing) the external programs the embedded cluster runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"

_PROJECT_ROOT = Path(__file__).resolve().parent.parent

_LIBFAKETIME_DIRS = (
    "/usr/lib/x86_64-linux-gnu/faketime",
    "/usr/lib/aarch64-linux-gnu/faketime",
    "/usr/lib/arm-linux-gnueabihf/faketime",
    "/usr/lib/i386-linux-gnu/faketime",
    "/usr/lib64/faketime",
    "/usr/lib/faketime",
    "/usr/local/lib/faketime",
    "/opt/homebrew/lib/faketime",
)


class MissingBinaryError(RuntimeError):
    """A program the cluster needs is not installed and could not be installed."""


def project_bin_dir() -> Path:
    """``<project>/.bin``: where ``./dev setup`` and :func:`find_toxiproxy_server` install."""
    return _PROJECT_ROOT / ".bin"


def find_toxiproxy_server(*, bin_dir: Path | None = None, install: bool = True) -> Path:
    """``toxiproxy-server`` from PATH, else ``<bin_dir>/toxiproxy-server``, else ``go install``.

    ``bin_dir`` defaults to ``<project>/.bin``. Raises :class:`MissingBinaryError` saying how
    to get it when none of these works.
    """
    on_path = shutil.which("toxiproxy-server")
    if on_path:
        return Path(on_path)
    bin_dir = bin_dir if bin_dir is not None else project_bin_dir()
    local = bin_dir / "toxiproxy-server"
    if local.is_file() and os.access(local, os.X_OK):
        return local
    go = shutil.which("go")
    if install and go:
        bin_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, GOBIN=str(bin_dir))
        done = subprocess.run(
            [go, "install", f"{TOXIPROXY_MODULE}@{TOXIPROXY_VERSION}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        built = bin_dir / "server"
        if done.returncode == 0 and built.is_file():
            built.rename(local)
            return local
        reason = f"`go install` failed (status {done.returncode}): {done.stderr.strip()[-500:]}"
    elif install:
        reason = "Go is not installed, so it could not be built"
    else:
        reason = "installing was not allowed"
    raise MissingBinaryError(
        f"toxiproxy-server not found on PATH nor in {bin_dir} ({reason}). Get it with "
        f"`./dev setup`, or `GOBIN={bin_dir} go install {TOXIPROXY_MODULE}@{TOXIPROXY_VERSION}` "
        f"then `mv {bin_dir}/server {local}`, or download a release binary from "
        "https://github.com/Shopify/toxiproxy/releases onto your PATH."
    )


def find_libfaketime(search_dirs: tuple[str, ...] = _LIBFAKETIME_DIRS) -> Path:
    """The libfaketime shared library (for LD_PRELOAD), or a clear error naming the package."""
    override = os.environ.get("PYTEST_OPERATOR_LIBFAKETIME")
    if override:
        path = Path(override)
        if path.is_file():
            return path
        raise MissingBinaryError(f"PYTEST_OPERATOR_LIBFAKETIME={override} does not exist")
    for directory in search_dirs:
        candidate = Path(directory) / "libfaketime.so.1"
        if candidate.is_file():
            return candidate
    raise MissingBinaryError(
        "libfaketime not found (looked for libfaketime.so.1 in "
        + ", ".join(search_dirs)
        + "). Install it with `sudo apt-get install faketime` (or `./dev setup`), or point "
        "PYTEST_OPERATOR_LIBFAKETIME at the library."
    )


def find_program(name: str, hint: str) -> Path:
    """A program from PATH, or a clear error with ``hint`` saying how to install it."""
    found = shutil.which(name)
    if found is None:
        raise MissingBinaryError(f"{name} not found on PATH. {hint}")
    return Path(found)
