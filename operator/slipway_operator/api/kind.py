"""How a kind is described once: its spec and status models, names, printer columns and CEL rules.

The CRD generator (`crd.py`) and the local validator (`validation.py`) both read these descriptions,
so a rule is written once and both the API server and `slipway run` enforce it with one message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from slipway_operator.api.common import GROUP


@dataclass(frozen=True)
class Rule:
    """A CEL rule (`x-kubernetes-validations`) on the schema node of a model or of one of its fields.

    `self` is that node; rules that mention `oldSelf` are transition rules, checked on updates only.
    """

    rule: str
    message: str

    @property
    def is_transition(self) -> bool:
        return "oldSelf" in self.rule


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


# Rules by model class (the object node) or by (model class, field name) (that field's node).
RuleTarget = type[BaseModel] | tuple[type[BaseModel], str]


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    printer_columns: tuple[PrinterColumn, ...]
    rules: Mapping[RuleTarget, tuple[Rule, ...]] = field(default_factory=dict)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    def rules_for(self, cls: type[BaseModel], field: str | None = None) -> list[Rule]:
        """The rules of `cls` (or of its field), including those declared on its base classes."""
        rules: list[Rule] = []
        for base in cls.__mro__:
            key = base if field is None else (base, field)
            rules.extend(self.rules.get(key, ()))
        return rules


def immutable(kind: str, *fields: str) -> tuple[Rule, ...]:
    """Transition rules that keep the named spec fields as they were at creation."""
    return tuple(
        Rule(
            rule=f"has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f})",
            message=f"spec.{f} cannot change once the {kind} exists: create a new {kind} instead",
        )
        for f in fields
    )


def exactly_one(*fields: str, what: str) -> Rule:
    present = ", ".join(f"has(self.{f})" for f in fields)
    return Rule(rule=f"[{present}].filter(x, x).size() == 1", message=f"set exactly one of {what}")


def uri_rule(schemes: tuple[str, ...]) -> Rule:
    alternatives = "|".join(schemes)
    listed = ", ".join(f"{s}://" for s in schemes[:-1]) + f" or {schemes[-1]}://"
    return Rule(rule=f"self.matches('^({alternatives})://.+')", message=f"must be a URI starting with {listed}")


COMMON_COLUMNS_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
