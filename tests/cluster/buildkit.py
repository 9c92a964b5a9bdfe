"""Slipway's images built from ``images/*/Dockerfile`` with BuildKit: no Docker engine, no registry, no network.

The machines Slipway is developed and tested on have neither a Docker engine nor a registry, and their pods
cannot pull. This builds the three images the way a user without Docker would, with BuildKit (``buildkitd``
on the same runc the real node uses, and ``buildctl``, both built from their Go module by ``build.sh``):

- the base: the Dockerfiles take it as ``--build-arg PYTHON_IMAGE``; here it is a Debian bookworm root
  filesystem made by ``debootstrap`` from Debian's packages (Python 3.11, the Python the pins were frozen on,
  plus what the images would otherwise ``apt-get``), given to BuildKit as a named context;
- Python packages: a wheelhouse that ``pip download`` fills once (``images/constraints.txt``), given as the
  ``wheels`` build context, so ``pip install`` runs with ``--no-index``;
- no network: buildkitd runs in a network namespace of its own with only loopback, so a build that still
  needed the network would fail here rather than quietly download.

The result is a ``docker save`` archive per image, tagged ``slipway/<name>:dev``, kept in the cache folder
(``$SLIPWAY_TESTBED_CACHE``, default ``~/.cache/slipway-testbed``) under a hash of everything that goes into it,
so an image is rebuilt only when its inputs change; ``RealNode.import_image`` loads it into the node.

    python tests/cluster/buildkit.py operator trainer server      # build (or reuse) the archives, print paths
    python tests/cluster/buildkit.py --push registry.example.com/slipway --tag 0.1.0   # and push them

Pushing is ``crane push`` (go-containerregistry, built by ``build.sh``) of each archive to
``<registry>/<name>:<tag>``, with the credentials of ``~/.docker/config.json`` (``crane auth login``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BIN, HERE, Component, TestbedError, binary, wait_until
from node import PATH, CgroupTree

REPO = HERE.parent.parent
CACHE = Path(
    os.environ.get("SLIPWAY_TESTBED_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slipway-testbed"
)
DEBIAN_MIRROR = os.environ.get("SLIPWAY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SUITE = "bookworm"
# What the Dockerfiles' bases have or install: Python with venv (3.11 on bookworm), bash and wget for KubeRay's
# probes, procps, CA certificates, and Fashion-MNIST for `builtin://fashion-mnist`.
BASE_PACKAGES = [
    "python3",
    "python3-venv",
    "python-is-python3",
    "bash",
    "wget",
    "ca-certificates",
    "procps",
    "dataset-fashion-mnist",
]
BASE_NAME = "slipway-testbed-base"  # the build argument PYTHON_IMAGE names this named context
IMAGES = ("operator", "trainer", "server")
# Part of every image's cache key, with the sources, the base and the wheelhouse: raise it when the way images are
# built here changes (buildctl's options, the base's making), so that cached archives are rebuilt.
RECIPE = b"buildkit-docker-archive-1"


def image_tag(name: str) -> str:
    return f"slipway/{name}:dev"


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder of a cached thing at a time, across processes (make cluster and a test session)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".lock-{name}").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _log(message: str) -> None:
    print(f">> {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Inputs: the Debian base and the wheelhouse
# ---------------------------------------------------------------------------------------------


def _made_once(dest: Path, lock: str, what: str, make: Callable[[Path], None]) -> Path:
    """``dest``, made by ``make(tmp)`` into a fresh folder and moved into place whole, once; a folder left half made
    by an interrupted run is never taken for a finished one (``.complete`` is written last). The folders an older
    key made (``<lock>-*`` beside it) go once the new one is in place: a wheelhouse is 3 GB."""
    with _locked(lock):
        if (dest / ".complete").exists():
            return dest
        _log(what)
        tmp = Path(tempfile.mkdtemp(prefix=f"{lock}-", dir=CACHE))
        try:
            make(tmp)
            (tmp / ".complete").touch()
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for older in CACHE.glob(f"{lock}-*"):
            if older != dest and older.is_dir():
                shutil.rmtree(older, ignore_errors=True)
    return dest


def debian_base() -> Path:
    """A Debian root filesystem with ``BASE_PACKAGES`` (debootstrap, minbase), made once."""
    key = _digest(DEBIAN_SUITE.encode(), " ".join(BASE_PACKAGES).encode())

    def make(root: Path) -> None:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE, str(root),
             DEBIAN_MIRROR],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        # Device nodes are the runtime's business; caches and package lists are not part of a base.
        for leftover in ("dev", "var/cache/apt/archives", "var/lib/apt/lists", "tmp"):
            shutil.rmtree(root / leftover, ignore_errors=True)
            (root / leftover).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)

    what = f"making the image base: debootstrap {DEBIAN_SUITE} from {DEBIAN_MIRROR} (a few minutes, once)"
    return _made_once(CACHE / f"base-{DEBIAN_SUITE}-{key}", "base", what, make)


def wheelhouse() -> Path:
    """Every wheel the three images install (``images/constraints.txt``), downloaded once by pip."""
    constraints = REPO / "images" / "constraints.txt"
    key = _digest(constraints.read_bytes(), (REPO / "pyproject.toml").read_bytes())

    def make(dest: Path) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest), "--only-binary=:all:",
             "-c", str(constraints), f"{REPO}[operator,trainer]", "setuptools>=69", "wheel"],
            check=True,
        )  # fmt: skip
        for own in dest.glob("slipway-*"):  # the project itself is built from the context, not taken from here
            own.unlink()

    what = "filling the wheelhouse with pip download (images/constraints.txt; once per pin change)"
    return _made_once(CACHE / f"wheels-{key}", "wheels", what, make)


DISK_NEEDED_GB = 25  # seen: the trainer image's build peaks near 20 GB of layers, its archive is about 3 GB
CACHE_KEEP_MB = 10_000  # BuildKit's layer cache, at most (the dependency layers of the operator and server fit)

# What each Dockerfile copies: a change elsewhere (README.md, docs, tests) rebuilds no image, and a change to the
# operator's code rebuilds the operator's image only (the trainer's and the server's copy `trainer/` alone).
_COMMON = ("images/constraints.txt", "pyproject.toml", "trainer", ".dockerignore")
SOURCES = {
    "operator": ("images/operator", "operator", *_COMMON),
    "trainer": ("images/trainer", *_COMMON),
    "server": ("images/server", *_COMMON),
}


def _sources_digest(sources: tuple[str, ...]) -> bytes:
    """What of the repository goes into an image (the folders its Dockerfile copies): tracked files by their blob
    hashes, uncommitted changes and untracked files by their content."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args, "--", *sources], cwd=REPO, capture_output=True, check=True).stdout

    untracked = git("ls-files", "--others", "--exclude-standard").decode().split()
    extra = b"".join((REPO / p).read_bytes() for p in sorted(untracked) if (REPO / p).is_file())
    return git("ls-files", "-s") + git("diff", "--no-color", "HEAD") + extra


# ---------------------------------------------------------------------------------------------
# BuildKit
# ---------------------------------------------------------------------------------------------


@dataclass
class BuildKit:
    """buildkitd (runc worker, overlayfs) in a mount and network namespace of its own and a cgroup tree of its
    own; its state (the layer cache) in ``CACHE/buildkit`` so rebuilds reuse unchanged layers."""

    workdir: Path
    cgroups: CgroupTree = field(default_factory=lambda: CgroupTree(f"slipway-build-{uuid.uuid4().hex[:8]}"))
    component: Component | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "buildkitd.sock"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "buildkitd.toml"
        config.write_text(
            "\n".join(
                [
                    f'root = "{CACHE / "buildkit"}"',
                    "[grpc]",
                    f'  address = ["unix://{self.socket}"]',
                    "[worker.oci]",
                    "  enabled = true",
                    '  snapshotter = "overlayfs"',
                    '  binary = "runc"',
                    # The builder's namespace has loopback only: RUN steps get no network.
                    '  networkMode = "host"',
                    f'  defaultCgroupParent = "/{self.cgroups.root}/build"',
                    "  gc = true",
                    f'  gckeepstorage = "{CACHE_KEEP_MB}MB"',
                    "[worker.containerd]",
                    "  enabled = false",
                ]
            )
            + "\n"
        )
        self.cgroups.create()
        argv = [str(HERE / "in-cgroup.sh"), self.cgroups.root, "unshare", "--mount", "--net", "--propagation",
                "private", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "buildkitd",
                str(BIN / "buildkitd"), f"--config={config}"]  # fmt: skip
        self.component = Component("buildkitd", argv, self.workdir / "buildkitd.log")
        self.component.start(env={"PATH": PATH})
        wait_until("buildkitd", lambda: self._buildctl("debug", "workers").returncode == 0, 60, self.component)

    def _buildctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "buildctl"), f"--addr=unix://{self.socket}", *args], capture_output=True, text=True
        )

    def build(self, name: str, out: Path, base: Path, wheels: Path) -> Path:
        """``images/<name>/Dockerfile`` with the repository as context, as a docker archive at ``out``."""
        partial = out.with_suffix(".partial")
        log = self.workdir / f"build-{name}.log"
        argv = [
            str(BIN / "buildctl"), f"--addr=unix://{self.socket}", "build", "--progress=plain",
            "--frontend=dockerfile.v0",
            f"--local=context={REPO}", f"--local=dockerfile={REPO / 'images' / name}",
            f"--local=base={base}", f"--opt=context:{BASE_NAME}=local:base",
            f"--opt=build-arg:PYTHON_IMAGE={BASE_NAME}",
            f"--local=wheels={wheels}", "--opt=context:wheels=local:wheels",
            f"--output=type=docker,name={image_tag(name)},dest={partial},compression=uncompressed",
        ]  # fmt: skip
        start = time.monotonic()
        with log.open("w") as out_log:
            result = subprocess.run(argv, stdout=out_log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise TestbedError(f"building images/{name}/Dockerfile failed (log: {log}):\n{tail}")
        partial.replace(out)
        _log(f"built {image_tag(name)} in {time.monotonic() - start:.0f}s ({out.stat().st_size / 2**20:.0f} MiB)")
        return out

    def prune(self) -> None:
        """Hold the layer cache to ``CACHE_KEEP_MB``: buildkitd's own GC keeps what the last builds still
        reference, which for the trainer image alone is about 20 GB (seen: 29 GB after three images)."""
        self._buildctl("prune", f"--keep-storage={CACHE_KEEP_MB}")

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()
        self.cgroups.kill_all()
        self.cgroups.remove()


def image_archives(names: list[str] | tuple[str, ...] = IMAGES) -> dict[str, Path]:
    """The docker archives of ``names``, built when their inputs changed, else taken from the cache."""
    base, wheels = debian_base(), wheelhouse()
    wanted: dict[str, Path] = {}
    for name in names:
        key = _digest(_sources_digest(SOURCES[name]), str(base).encode(), str(wheels).encode(), RECIPE)
        wanted[name] = CACHE / "images" / f"{name}-{key}.tar"
    missing = [n for n, p in wanted.items() if not p.exists()]
    if missing:
        free_gb = shutil.disk_usage(CACHE if CACHE.exists() else Path.home()).free / 2**30
        if free_gb < DISK_NEEDED_GB:
            _log(
                f"warning: {free_gb:.0f} GB free under {CACHE}; building {', '.join(missing)} may need about "
                f"{DISK_NEEDED_GB} GB (BuildKit's layers, the archives); free some space if the build fails"
            )
        with _locked("buildkit"):
            (CACHE / "images").mkdir(parents=True, exist_ok=True)
            builder = BuildKit(Path(tempfile.mkdtemp(prefix="slipway-buildkit-")))
            try:
                builder.start()
                for name in missing:
                    _log(f"building {image_tag(name)} from images/{name}/Dockerfile with BuildKit (no network)")
                    for stale in (CACHE / "images").glob(f"{name}-*"):
                        stale.unlink()
                    builder.build(name, wanted[name], base, wheels)
                    builder.prune()  # after each image: the trainer's layers alone peak near 20 GB
            finally:
                with contextlib.suppress(Exception):  # a failed build's layers too: a full disk fails the next one
                    builder.prune()
                builder.stop()
            shutil.rmtree(builder.workdir, ignore_errors=True)  # kept (with its logs) only when a build failed
    return wanted


def push(archives: dict[str, Path], registry: str, tag: str) -> dict[str, str]:
    """Each archive pushed to ``<registry>/<name>:<tag>``; the pushed references, by digest."""
    pushed: dict[str, str] = {}
    for name, archive in archives.items():
        ref = f"{registry.rstrip('/')}/{name}:{tag}"
        _log(f"pushing {image_tag(name)} to {ref}")
        done = subprocess.run([binary("crane"), "push", str(archive), ref], capture_output=True, text=True)
        if done.returncode != 0:
            raise TestbedError(
                f"pushing {archive} to {ref} failed: {done.stderr.strip()[-2000:]}\n"
                "Check the registry's address and that you are logged in to it (`crane auth login` or "
                "`docker login`)."
            )
        pushed[name] = done.stdout.strip().splitlines()[-1]
    return pushed


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop buildkitd and its cgroups on the way out
    parser = argparse.ArgumentParser(description="Build Slipway's images with BuildKit (no Docker, no network).")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=f"{', '.join(IMAGES)} (default: all three)")
    parser.add_argument("--push", metavar="REGISTRY", help="push them to REGISTRY/<image>:TAG")
    parser.add_argument("--tag", default="dev", help="the tag they are pushed with (default: dev)")
    args = parser.parse_args(argv)
    names = args.images or list(IMAGES)
    unknown = sorted(set(names) - set(IMAGES))
    if unknown:
        parser.error(f"no image {', '.join(unknown)}; the images are {', '.join(IMAGES)}")
    archives = image_archives(names)
    for name, path in archives.items():
        print(f"{image_tag(name)}\t{path}")
    if args.push:
        try:
            for ref in push(archives, args.push, args.tag).values():
                print(ref)
        except TestbedError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
