"""Images for the Docker engine, built here with no registry: a manifest, a base, builds.

An :class:`ImageManifest` (``docker/images.toml`` by default) describes a *base* image and
the images built FROM it. :func:`ensure_images` makes sure they exist in a
:class:`~pytest_operator._docker.DockerEngine`:

- the base: ``debootstrap --variant=<variant> <suite> <rootfs> <mirror>``, its ``files``
  added, tarred without its ``exclude`` globs, and ``docker import``-ed with its entrypoint
  and environment. Its tag is a hash of that recipe. The tarball is kept in the engine's
  cache directory, so a fresh data root re-imports it (about a second) without debootstrap
  (about 45 s).
- each image: its context folder is staged with the manifest's ``files`` (from the project)
  and ``programs`` (found on PATH or in the project's ``.bin``) and the host's CA bundle as
  ``host-ca.crt`` (HTTPS from inside a build goes through an intercepting proxy whose CA
  only the host's bundle has; a Dockerfile points pip at it: ``PIP_CERT``), then ``docker
  build --network host --build-arg BASE=<base>``. Its tag is a hash of the staged context
  (every file's path, mode bit and content) and the base's tag, so an unchanged image is
  not rebuilt; ``latest`` is moved to it, and older tags of that repository are removed.

Builds use Docker's classic builder (``DOCKER_BUILDKIT=0``): the engine is Debian's 20.10,
which BuildKit-through-the-CLI would need the buildx plugin for. Concurrent callers with
the same engine wait on a lock, so an image is built once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_operator._docker import (
    HOST_CA,
    HOST_CA_BUNDLE,
    DockerEngine,
    DockerError,
    file_lock,
    find_debootstrap,
    find_docker_cli,
    log_tail,
    remove_tree,
)

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = _PROJECT_ROOT / "docker" / "images.toml"
_RECIPE_VERSION = "1"  # bump to rebuild every base when this module's recipe changes
_IGNORED = ("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
_DEBOOTSTRAP_TIMEOUT = 900.0
_BUILD_TIMEOUT = 1200.0
_LOCK_TIMEOUT = 2400.0  # a cold build of every image, by another process, fits well within


@dataclass(frozen=True, slots=True)
class BaseImage:
    """The base every image is built FROM (see the module docstring)."""

    repository: str
    suite: str
    variant: str
    mirror: str
    exclude: tuple[str, ...] = ()
    files: tuple[tuple[str, Path], ...] = ()  # path in the image, source file
    entrypoint: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def tag(self) -> str:
        """A hash of the whole recipe: what debootstrap is asked for, the files added (their
        content and mode), what is left out, the entrypoint and the environment."""
        h = hashlib.sha256(f"base {_RECIPE_VERSION}\0".encode())
        for part in (self.suite, self.variant, self.mirror, *self.exclude, "\1"):
            h.update(part.encode() + b"\0")
        for dest, source in self.files:
            h.update(dest.encode() + b"\0")
            _hash_file(h, source)
        for part in (*self.entrypoint, "\1", *(f"{k}={v}" for k, v in self.env)):
            h.update(part.encode() + b"\0")
        return h.hexdigest()[:16]

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag()}"


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """One image built FROM the base: ``context`` (a folder with a Dockerfile), ``files``
    (path in the context, source file or folder) and ``programs`` (path in the context, the
    name of a program to find) copied in."""

    name: str
    repository: str
    context: Path
    files: tuple[tuple[str, Path], ...] = ()
    programs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ImageManifest:
    base: BaseImage
    images: tuple[ImageSpec, ...]

    @classmethod
    def load(cls, path: Path = DEFAULT_MANIFEST, project_root: Path | None = None) -> ImageManifest:
        """Read a manifest: paths of ``files`` are relative to ``project_root`` (default: the
        manifest's parent's parent), contexts and base files to the manifest's folder."""
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise DockerError(f"cannot read the image manifest {path}: {e}") from e
        here = path.parent
        project = project_root if project_root is not None else here.parent
        prefix = str(raw.get("prefix", "local"))
        b = raw.get("base", {})
        try:
            base = BaseImage(
                repository=f"{prefix}/base",
                suite=str(b["suite"]),
                variant=str(b.get("variant", "minbase")),
                mirror=str(b["mirror"]),
                exclude=tuple(map(str, b.get("exclude", ()))),
                files=tuple((str(k), here / str(v)) for k, v in b.get("files", {}).items()),
                entrypoint=tuple(map(str, b.get("entrypoint", ()))),
                env=tuple((str(k), str(v)) for k, v in b.get("env", {}).items()),
            )
            images = tuple(
                ImageSpec(
                    name=str(name),
                    repository=f"{prefix}/{name}",
                    context=here / str(spec["context"]),
                    files=tuple(
                        (str(k), project / str(v)) for k, v in spec.get("files", {}).items()
                    ),
                    programs=tuple((str(k), str(v)) for k, v in spec.get("programs", {}).items()),
                )
                for name, spec in raw.get("images", {}).items()
            )
        except (KeyError, AttributeError, TypeError) as e:
            raise DockerError(f"image manifest {path}: missing or malformed entry: {e}") from e
        return cls(base, images)

    def image(self, name: str) -> ImageSpec:
        for spec in self.images:
            if spec.name == name:
                return spec
        valid = ", ".join(s.name for s in self.images)
        raise KeyError(f"no image {name!r} in the manifest (images: {valid})")


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """An image present in the engine: ``ref`` is ``repository:tag`` (the exact one to run)."""

    name: str
    repository: str
    tag: str
    built: bool  # False: it was already there
    seconds: float  # what ensuring it took

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True, slots=True)
class Images:
    base: BuiltImage
    images: tuple[BuiltImage, ...]

    def __getitem__(self, name: str) -> BuiltImage:
        for image in self.images:
            if image.name == name:
                return image
        valid = ", ".join(i.name for i in self.images)
        raise KeyError(f"no image {name!r} (images: {valid})")

    def ref(self, name: str) -> str:
        return self[name].ref


# --- hashing and staging ------------------------------------------------------------------


def _hash_file(h: hashlib._Hash, path: Path) -> None:
    mode = path.stat().st_mode
    h.update(b"x" if mode & stat.S_IXUSR else b"-")
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(b"\0")


def context_hash(context: Path, extra: Iterable[str] = ()) -> str:
    """A hash of a build context: every file's relative path, executable bit and content,
    every symlink's target, and ``extra`` strings (build arguments)."""
    h = hashlib.sha256(f"context {_RECIPE_VERSION}\0".encode())
    for part in extra:
        h.update(part.encode() + b"\0")
    for dirpath, dirnames, filenames in os.walk(context):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            h.update(str(path.relative_to(context)).encode() + b"\0")
            if path.is_symlink():
                h.update(b"-> " + os.readlink(path).encode() + b"\0")
            else:
                _hash_file(h, path)
    return h.hexdigest()[:16]


def find_image_program(name: str) -> Path:
    """A program to copy into an image: from PATH, else the project's ``.bin``."""
    found = shutil.which(name) or shutil.which(name, path=str(_PROJECT_ROOT / ".bin"))
    if found is None:
        raise DockerError(
            f"{name} (copied into an image) is neither on PATH nor in {_PROJECT_ROOT / '.bin'}: "
            "`./dev setup` installs the project's programs there"
        )
    return Path(found)


def _stage(spec: ImageSpec, into: Path, ca_bundle: Path | None) -> None:
    ignore = shutil.ignore_patterns(*_IGNORED)
    if not (spec.context / "Dockerfile").is_file():
        raise DockerError(f"image {spec.name}: no Dockerfile in {spec.context}")
    shutil.copytree(spec.context, into, ignore=ignore)
    for dest, source in spec.files:
        target = into / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, target)
        else:
            raise DockerError(f"image {spec.name}: {source} (for {dest}) does not exist")
    for dest, program in spec.programs:
        target = into / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(find_image_program(program), target)
    ca = into / HOST_CA
    if ca_bundle is not None and ca_bundle.is_file():
        shutil.copyfile(ca_bundle, ca)
    else:
        ca.write_bytes(b"")


# --- ensuring -----------------------------------------------------------------------------


def _present(engine: DockerEngine) -> set[str]:
    out = engine.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def _run_logged(argv: Sequence[str], log: Path, env: Mapping[str, str], timeout: float) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DockerError(
                f"`{' '.join(argv[:3])} ...` took over {timeout:g} s; the end of {log}:\n"
                f"{log_tail(log)}"
            ) from None
    if done.returncode != 0:
        raise DockerError(
            f"`{' '.join(argv[:3])} ...` failed (status {done.returncode}); the end of {log}:\n"
            f"{log_tail(log)}"
        )


def _base_tarball(
    engine: DockerEngine, base: BaseImage, tag: str, say: Callable[[str], None]
) -> Path:
    """The base's root filesystem as a tarball, from the cache or made with debootstrap."""
    cache = engine.cache_dir
    tarball = cache / f"base-{base.suite}-{tag}.tar"
    if tarball.is_file():
        return tarball
    debootstrap = find_debootstrap()
    rootfs = cache / f"rootfs-{tag}.{os.getpid()}"
    remove_tree(rootfs)
    try:
        say(f"debootstrap --variant={base.variant} {base.suite} (about 45 s)")
        _run_logged(
            [str(debootstrap), f"--variant={base.variant}", base.suite, str(rootfs), base.mirror],
            cache / "logs" / "debootstrap.log",
            os.environ,
            _DEBOOTSTRAP_TIMEOUT,
        )
        for dest, source in base.files:
            target = rootfs / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        partial = tarball.with_suffix(f".tar.{os.getpid()}")
        argv = ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial)]
        argv += [f"--exclude={pattern}" for pattern in base.exclude]
        _run_logged([*argv, "."], cache / "logs" / "base-tar.log", os.environ, 300.0)
        os.replace(partial, tarball)
    finally:
        remove_tree(rootfs)
    return tarball


def _ensure_base(
    engine: DockerEngine, base: BaseImage, present: set[str], say: Callable[[str], None]
) -> BuiltImage:
    started = time.monotonic()
    tag = base.tag()
    ref = f"{base.repository}:{tag}"
    if ref in present:
        return BuiltImage("base", base.repository, tag, False, time.monotonic() - started)
    tarball = _base_tarball(engine, base, tag, say)
    changes: list[str] = []
    if base.entrypoint:
        changes += ["--change", "ENTRYPOINT " + json.dumps(list(base.entrypoint))]
    for key, value in base.env:
        changes += ["--change", f"ENV {key}={value}"]
    say(f"docker import {tarball.name} as {ref}")
    engine.docker("import", *changes, str(tarball), ref, timeout=600.0)
    engine.docker("tag", ref, f"{base.repository}:latest")
    return BuiltImage("base", base.repository, tag, True, time.monotonic() - started)


def _ensure_image(
    engine: DockerEngine,
    spec: ImageSpec,
    base_ref: str,
    present: set[str],
    ca_bundle: Path | None,
    say: Callable[[str], None],
) -> BuiltImage:
    started = time.monotonic()
    staging = engine.cache_dir / "staging" / f"{spec.name}.{os.getpid()}"
    remove_tree(staging)
    try:
        _stage(spec, staging, ca_bundle)
        tag = context_hash(staging, [f"BASE={base_ref}"])
        ref = f"{spec.repository}:{tag}"
        built = ref not in present
        if built:
            say(f"docker build {spec.name} as {ref}")
            env = dict(engine.env(), DOCKER_BUILDKIT="0")
            argv = [str(find_docker_cli()), "build", "--network", "host", "--force-rm"]
            argv += ["--build-arg", f"BASE={base_ref}", "-t", ref, str(staging)]
            _run_logged(argv, engine.cache_dir / "logs" / f"{spec.name}.log", env, _BUILD_TIMEOUT)
    finally:
        remove_tree(staging)
    engine.docker("tag", ref, f"{spec.repository}:latest")
    if built:
        _remove_older(engine, spec.repository, keep={tag, "latest"}, present=present)
    return BuiltImage(spec.name, spec.repository, tag, built, time.monotonic() - started)


def _remove_older(engine: DockerEngine, repository: str, keep: set[str], present: set[str]) -> None:
    """Remove the repository's other tags (earlier builds); one still in use stays."""
    for ref in sorted(present):
        repo, _, tag = ref.rpartition(":")
        if repo == repository and tag not in keep:
            engine.docker("rmi", ref, check=False)


def ensure_images(
    engine: DockerEngine,
    manifest: ImageManifest | None = None,
    *,
    names: Sequence[str] | None = None,
    ca_bundle: Path | None = HOST_CA_BUNDLE,
    say: Callable[[str], None] | None = None,
) -> Images:
    """Make sure the base and the manifest's images (or only ``names``) exist in ``engine``
    (which must be running); build what is missing or changed. ``say`` is told each slow
    step (debootstrap, import, build) before it starts."""
    manifest = manifest if manifest is not None else ImageManifest.load()
    wanted = manifest.images if names is None else tuple(manifest.image(n) for n in names)
    tell = say if say is not None else (lambda _msg: None)
    if not engine.running():
        raise DockerError(f"no Docker engine answers on {engine.socket}: start it first")
    with file_lock(engine.cache_dir / "images.lock", _LOCK_TIMEOUT, "building images"):
        present = _present(engine)
        base = _ensure_base(engine, manifest.base, present, tell)
        images = tuple(
            _ensure_image(engine, spec, base.ref, present, ca_bundle, tell) for spec in wanted
        )
    return Images(base, images)


__all__ = [
    "BaseImage",
    "BuiltImage",
    "ImageManifest",
    "ImageSpec",
    "Images",
    "context_hash",
    "ensure_images",
]
