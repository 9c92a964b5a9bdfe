"""The Dockerfiles of images/, checked without a Docker engine (none runs on the development machines): pinned
bases, multi-stage builds, a numeric non-root user, the workload contract the operator's pods rely on, the extras
each image installs, the pins they install with, and what .dockerignore keeps out of the build context."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from slipway_operator import builders
from slipway_operator.api.common import Resources

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
NAMES = ("operator", "trainer", "server")
CONFIG = f"{builders.CONFIG_DIR}/{builders.CONFIG_FILE}"


@dataclass
class Stage:
    base: str  # with the global ARGs' defaults substituted
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    assert not pending, "a continuation at the end of the file"
    return out


def stages(name: str) -> list[Stage]:
    parsed = instructions((IMAGES / name / "Dockerfile").read_text())
    args: dict[str, str] = {}
    result: list[Stage] = []
    for keyword, rest in parsed:
        if keyword == "ARG" and not result:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip().strip('"')
        elif keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(image, alias))
        else:
            assert result or keyword in ("ARG",), f"{keyword} before the first FROM in images/{name}/Dockerfile"
            result[-1].instructions.append((keyword, rest))
    return result


def exec_form(stage: Stage, keyword: str) -> list[str]:
    found = stage.all(keyword)
    if not found:
        return []
    value = json.loads(found[-1])  # exec form (JSON): no shell between the runtime and the process
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), (keyword, found[-1])
    return value


def command(name: str) -> list[str]:
    final = stages(name)[-1]
    return exec_form(final, "ENTRYPOINT") + exec_form(final, "CMD")


def installs(stage_list: list[Stage]) -> str:
    return " ".join(run for stage in stage_list for run in stage.all("RUN"))


@pytest.mark.parametrize("name", NAMES)
def test_bases_are_pinned_and_builds_are_multi_stage(name: str) -> None:
    found = stages(name)
    assert len(found) >= 2, f"images/{name}/Dockerfile should be multi-stage"
    aliases = {s.name for s in found if s.name}
    for stage in found:
        if stage.base in aliases or stage.base == "scratch":
            continue  # a stage of this file, or the empty one (the `wheels` build context's default)
        repository, _, digest = stage.base.partition("@")
        tag = repository.rsplit("/", 1)[-1].partition(":")[2]
        assert tag != "latest", stage.base
        pinned = digest.startswith("sha256:") or re.search(r"(^|[^\d.])\d+\.\d+\.\d+", tag) is not None
        assert pinned, f"{stage.base}: pin the base by an explicit version (x.y.z) or a digest"


@pytest.mark.parametrize("name", NAMES)
def test_the_final_stage_runs_as_a_numeric_non_root_user(name: str) -> None:
    final = stages(name)[-1]
    users = final.all("USER")
    assert users, f"images/{name}: the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]  # numeric: runAsNonRoot can verify it
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    # the uid the operator's pods (builders.POD_SECURITY) and the chart ask for
    assert int(uid) == builders.POD_SECURITY["runAsUser"]


def test_the_trainer_runs_the_workload_contract_and_what_kuberay_needs() -> None:
    cmd = command("trainer")
    assert cmd[:3] == ["python", "-m", "slipway_trainer"] and cmd[3] in ("prep", "train", "tune")
    assert cmd[4:] == ["--config", CONFIG]
    # The RayJob's entrypoint is exactly this command with the run's step.
    rayjob = builders.ray_job(
        builders.Owner("slipway.dev/v1alpha1", "TrainingRun", "r", "ns", "uid"),
        builders.Workload(step="train", image="img", resources=_resources(), config="{}"),
    )
    assert shlex.split(rayjob["spec"]["entrypoint"]) == [*cmd[:3], "train", *cmd[4:]]
    final = stages("trainer")[-1]
    assert not final.all("ENTRYPOINT"), "KubeRay sets the Ray containers' command: no ENTRYPOINT to prepend"
    apt = " ".join(r for r in final.all("RUN") if "apt-get install" in r)
    for tool in ("bash", "wget"):  # KubeRay's probes: bash -c "wget ... | grep success"
        assert re.search(rf"\b{tool}\b", apt), f"the trainer image must install {tool}"
    built = installs(stages("trainer"))
    assert "'.[trainer]'" in built and "ray --version" in built  # the `ray` CLI of ray job submit
    assert any("/opt/venv/bin" in env for env in final.all("ENV"))  # ray and python on PATH


def test_the_server_runs_the_serve_contract_as_the_operators_deployment_does() -> None:
    cmd = command("server")
    assert cmd == ["python", "-m", "slipway_trainer", "serve", "--config", CONFIG]
    deployment = builders.server_deployment(
        builders.Owner("slipway.dev/v1alpha1", "ModelDeployment", "m", "ns", "uid"),
        "stable",
        "rev",
        "img",
        "m-rev",
        _ServerResources(),
        1,
    )
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"] == cmd
    built = installs(stages("server"))
    assert "onnxruntime" in built
    assert "[trainer]" not in built and "torch" not in built and "ray" not in built.replace("pyarrow", "")


def test_the_operator_runs_slipway_operator_with_the_operator_extra_only() -> None:
    assert command("operator")[:2] == ["slipway", "operator"]
    built = installs(stages("operator"))
    assert "'.[operator]'" in built and "trainer]" not in built and "[all]" not in built


def test_the_extras_the_images_install_exist() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name in NAMES:
        for extra in re.findall(r"'\.\[(\w+)\]'", installs(stages(name))):
            assert extra in extras, (name, extra)


def test_the_images_install_with_the_pins_and_the_pins_satisfy_pyproject() -> None:
    pins = {}
    for line in (IMAGES / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[_canonical(req.name)] = spec.version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["operator"]
    wanted += project["optional-dependencies"]["trainer"]
    for text in wanted:
        req = Requirement(text)
        name = _canonical(req.name)
        assert name in pins, f"images/constraints.txt has no pin for {req.name}: run images/constraints.sh"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {text}"
    for name in NAMES:
        for run in (r for r in installs(stages(name)).split(" && ") if "pip install" in r):
            assert "-c /tmp/constraints.txt" in run, (name, run)


def dockerignored(patterns: list[str], path: str) -> bool:
    """Docker's rule, for plain patterns: the last matching line wins; a directory covers what is inside it."""
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.lstrip("!").strip("/")
        if path == bare or path.startswith(bare + "/"):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_the_machine_out_of_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".venv", "tests/cluster/bin", ".slipway", ".git", ".testbed"):
        assert dockerignored(patterns, path), f".dockerignore should exclude {path}"
    assert dockerignored(patterns, "README.md"), "a docs edit should rebuild no image"
    for path in ("pyproject.toml", "operator", "trainer", "images/constraints.txt"):
        assert not dockerignored(patterns, path), f"the images COPY {path}"
    for name in NAMES:
        for copy in stages(name)[0].all("COPY"):
            source = copy.split()[0]
            assert not dockerignored(patterns, source), (name, copy)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _resources() -> Resources:
    return Resources()


@dataclass
class _ServerResources:
    cpu: str = "1"
    memory: str = "1Gi"
    gpus: int = 0
