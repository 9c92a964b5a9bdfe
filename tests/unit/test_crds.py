"""The CRDs in crds/ are generated from the models, up to date, and structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic.alias_generators import to_snake

import slipway_operator
from slipway_operator import api
from slipway_operator.api.crd import file_name, render
from slipway_operator.api.kinds import KINDS

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_crds_folder_is_up_to_date(kind: api.Kind) -> None:
    path = CRDS / file_name(kind)
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text() == render(kind), f"{path} is out of date with the models: run `make crds`"


def test_crds_folder_holds_nothing_else() -> None:
    assert sorted(p.name for p in CRDS.iterdir()) == sorted(file_name(k) for k in KINDS)


def structural_problems(node: dict[str, Any], path: str) -> list[str]:
    problems = []
    for key in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs", "const"):
        if key in node:
            problems.append(f"{path}: {key}")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_schema_is_structural(kind: api.Kind) -> None:
    crd = yaml.safe_load(render(kind))
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["slipway"]
    assert structural_problems(version["schema"]["openAPIV3Schema"], kind.kind) == []


def test_public_names_exist() -> None:
    for name in api.__all__:
        assert hasattr(api, name), name


def test_every_status_field_in_a_crd_is_one_the_operator_sets() -> None:
    """The CRDs are generated from the `*Status` models, and `reconcile.typed` refuses a field the model lacks;
    this is the other direction: a top-level status field that no status code names is one nothing sets."""
    operator = Path(slipway_operator.__file__).parent
    code = "\n".join(
        p.read_text()
        for p in [*operator.glob("controllers/*.py"), operator / "reconcile.py", operator / "runstatus.py"]
    )
    for kind in api.KINDS:
        fields = [f.alias or name for name, f in kind.status.model_fields.items()]
        never_set = [f for f in fields if f'"{f}"' not in code and f"{to_snake(f)}=" not in code]
        assert never_set == [], f"{kind.kind} status fields nothing sets: {never_set}"
