"""Container images for the real node, made without a registry or a Docker engine.

No registry can be reached from this machine, so the test bed makes the images its real node needs from
what it can get: Debian's packages and its own binaries. An image here is a root filesystem folder packed
as a ``docker save`` archive (``manifest.json``, the image config and one layer), which
``ctr images import`` loads into the node's containerd.

- ``registry.k8s.io/pause:3.10``: the sandbox image (the test bed's own ``pause`` binary), under the name
  containerd's CRI asks for;
- ``slipway.dev/testbed/busybox:dev``: Debian's static busybox, for pods that check the node itself
  (networking, DNS, logs, exec).

Archives are rebuilt only when their inputs change (the archive's name carries a hash of them), into
``tests/cluster/bin/images/``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
IMAGES = BIN / "images"
DEBS = BIN / "debs"

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
BUSYBOX_IMAGE = "slipway.dev/testbed/busybox:dev"
BUSYBOX_DEB = "busybox-static"

# A non-root user in every test-bed image, as the restricted Pod Security Standard wants.
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "app:x:1000:1000::/tmp:/bin/sh\n"
)
GROUP = "root:x:0:\nnogroup:x:65534:\napp:x:1000:\n"


@dataclass
class Image:
    tag: str
    rootfs: Path
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(
        default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    )
    user: str = ""


def _layer(rootfs: Path) -> bytes:
    """The root filesystem as one uncompressed, reproducible tar layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def write_archive(image: Image, out: Path) -> Path:
    """``image`` as a ``docker save`` archive at ``out``."""
    layer = _layer(image.rootfs)
    diff_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": image.entrypoint or None,
            "Cmd": image.cmd or None,
            "Env": image.env,
            "User": image.user,
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": "slipway test bed (tests/cluster/images.py)"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [image.tag], "Layers": [f"{diff_id}/layer.tar"]}]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        for name, data in (
            (f"{diff_id}/layer.tar", layer),
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out


def _cached(name: str, inputs: list[bytes]) -> tuple[Path, bool]:
    digest = hashlib.sha256(b"".join(inputs) + Path(__file__).read_bytes()).hexdigest()[:16]
    path = IMAGES / f"{name}-{digest}.tar"
    return path, path.exists()


def _base_rootfs(root: Path) -> None:
    for d in ("etc", "tmp", "proc", "sys", "dev", "bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)


def pause_archive() -> Path:
    pause = BIN / "pause"
    if not pause.exists():
        raise FileNotFoundError(f"{pause} is missing: run tests/cluster/build.sh")
    out, fresh = _cached("pause", [pause.read_bytes()])
    if fresh:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy2(pause, root / "pause")
        return write_archive(Image(PAUSE_IMAGE, root, entrypoint=["/pause"], user="65535:65535"), out)


def debian_package(name: str) -> Path:
    """A Debian package's .deb, downloaded once (apt's own download) into ``bin/debs``."""
    DEBS.mkdir(parents=True, exist_ok=True)
    found = sorted(DEBS.glob(f"{name}_*.deb"))
    if found:
        return found[-1]
    subprocess.run(["apt-get", "download", "-q", name], cwd=DEBS, check=True, capture_output=True)
    found = sorted(DEBS.glob(f"{name}_*.deb"))
    if not found:
        raise FileNotFoundError(f"apt-get download {name} left no .deb in {DEBS}")
    return found[-1]


def busybox_archive() -> Path:
    deb = debian_package(BUSYBOX_DEB)
    out, fresh = _cached("busybox", [deb.read_bytes()])
    if fresh:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        unpacked, root = Path(tmp) / "deb", Path(tmp) / "rootfs"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        _base_rootfs(root)
        shutil.copy2(unpacked / "bin/busybox", root / "bin/busybox")
        applets = subprocess.run([str(root / "bin/busybox"), "--list"], capture_output=True, text=True, check=True)
        for applet in applets.stdout.split():
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        return write_archive(Image(BUSYBOX_IMAGE, root, cmd=["sh"]), out)
