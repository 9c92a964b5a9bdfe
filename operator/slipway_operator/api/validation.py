"""Validate a manifest on this machine the way the API server would, plus what only Slipway can check.

`validate_manifest` parses the spec with the pydantic models (types, ranges, unknown fields), then
evaluates the same CEL rules the CRDs carry, on the defaulted spec, with the same messages. Rules that
CEL cannot express (a search-space path that names no field of the template, ...) are pure validators
here; the operator reports them as `Stalled=True` with reason `InvalidSpec`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import cel
from pydantic import BaseModel, ValidationError

from slipway_operator.api.common import API_VERSION
from slipway_operator.api.kind import Kind, Rule
from slipway_operator.api.kinds import BY_KIND
from slipway_operator.api.trainingrun import TrialTemplate
from slipway_operator.api.tuningsweep import TuningSweepSpec
from slipway_trainer.config.tune import search_space_problems

NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class FieldError:
    """A problem with one field: its path in the manifest and what is wrong, in words."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidManifest(ValueError):
    def __init__(self, kind: str, name: str, errors: list[FieldError]) -> None:
        self.errors = errors
        listed = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f'{kind} "{name}" is invalid:\n{listed}')


def validate_manifest(manifest: dict[str, Any]) -> BaseModel:
    """The parsed spec of a valid manifest; `InvalidManifest` listing every problem otherwise."""
    kind_name = str(manifest.get("kind", ""))
    name = str((manifest.get("metadata") or {}).get("name", ""))
    kind = BY_KIND.get(kind_name)
    errors: list[FieldError] = []
    if kind is None:
        known = ", ".join(BY_KIND)
        raise InvalidManifest(kind_name or "manifest", name, [FieldError("kind", f"must be one of {known}")])
    if manifest.get("apiVersion") != API_VERSION:
        errors.append(FieldError("apiVersion", f"must be {API_VERSION}"))
    if not NAME_PATTERN.match(name) or len(name) > 63:
        errors.append(
            FieldError("metadata.name", "must be a lowercase RFC 1123 label: a-z, 0-9 and '-', at most 63 chars")
        )
    spec, spec_errors = validate_spec(kind, manifest.get("spec"))
    errors.extend(spec_errors)
    if errors or spec is None:
        raise InvalidManifest(kind.kind, name, errors)
    return spec


def validate_spec(kind: Kind, spec: Any) -> tuple[BaseModel | None, list[FieldError]]:
    if not isinstance(spec, dict):
        return None, [FieldError("spec", "is required and must be an object")]
    try:
        parsed = kind.spec.model_validate(spec)
    except ValidationError as err:
        return None, [_pydantic_error(kind.spec, e) for e in err.errors()]
    errors = evaluate_rules(kind, parsed, "spec")
    if not errors:
        errors = semantic_errors(kind, parsed)
    return parsed, errors


def _pydantic_error(model: type[BaseModel], error: Any) -> FieldError:
    path = _field_path(model, error["loc"])
    if error["type"] == "extra_forbidden":
        return FieldError(path, f'unknown field "{path}"')
    if error["type"] == "missing":
        return FieldError(path, "Required value")
    return FieldError(path, str(error["msg"]).removeprefix("Value error, "))


def _field_path(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """`spec.transforms[0].type`, `spec.searchSpace[optimizer.learningRate].uniform`: as the API server
    writes paths (list indexes and map keys in brackets)."""
    path = "spec"
    annotation: Any = model
    for part in loc:
        origin = getattr(annotation, "__origin__", None)
        args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
        if origin is None and len(args) == 1:  # Optional[X]
            annotation, origin = args[0], getattr(args[0], "__origin__", None)
            args = list(getattr(annotation, "__args__", ()))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(part, str):
            fields = {(i.alias or n): i for n, i in annotation.model_fields.items()}
            path += f".{part}"
            annotation = fields[part].annotation if part in fields else None
        elif origin in (list, dict) and args:
            path += f"[{part}]"
            annotation = args[-1]
        else:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
            annotation = None
    return path


# ---------------------------------------------------------------------------------------------
# CEL rules, evaluated as the API server would on the defaulted object
# ---------------------------------------------------------------------------------------------


def evaluate_rules(kind: Kind, model: BaseModel, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    value = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    errors.extend(_check(kind.rules_for(type(model)), value, path))
    for field, info in type(model).model_fields.items():
        child = getattr(model, field)
        if child is None:
            continue
        child_path = f"{path}.{info.alias or field}"
        field_rules = kind.rules_for(type(model), field)
        if field_rules:
            errors.extend(_check(field_rules, value[info.alias or field], child_path))
        errors.extend(_descend(kind, child, child_path))
    return errors


def _descend(kind: Kind, value: Any, path: str) -> list[FieldError]:
    if isinstance(value, BaseModel):
        return evaluate_rules(kind, value, path)
    errors: list[FieldError] = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            errors.extend(_descend(kind, item, f"{path}[{i}]"))
    elif isinstance(value, dict):
        for key, item in value.items():
            errors.extend(_descend(kind, item, f"{path}[{key}]"))
    return errors


def _check(rules: list[Rule], value: Any, path: str) -> list[FieldError]:
    errors = []
    for rule in rules:
        if rule.is_transition:
            continue  # only on updates, which happen on the API server
        if _program(rule.rule).execute({"self": value}) is not True:
            errors.append(FieldError(path, rule.message))
    return errors


@functools.cache
def _program(rule: str) -> Any:
    """A rule compiled once (evaluating its text parses it again each time: 60 times slower)."""
    return cel.compile(rule)


# ---------------------------------------------------------------------------------------------
# What CEL cannot say
# ---------------------------------------------------------------------------------------------


def semantic_errors(kind: Kind, spec: BaseModel) -> list[FieldError]:
    if isinstance(spec, TuningSweepSpec):
        return search_space_errors(spec)
    return []


def search_space_errors(spec: TuningSweepSpec) -> list[FieldError]:
    """Every searchSpace path must name a field of the template, and its values must fit that field."""
    template = spec.template.model_dump(mode="json", by_alias=True, exclude_none=True)
    return [
        FieldError(f"spec.searchSpace[{path}]", problem)
        for path, problem in search_space_problems(TrialTemplate, template, spec.search_space)
    ]
