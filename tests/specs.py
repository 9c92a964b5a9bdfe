"""Dataset specs that several tests prepare the same way (imported by name: pytest puts tests/ on sys.path for
conftest.py). Tests that need a variant say so with `{**SPEC, ...}` where they use it."""

from __future__ import annotations

from typing import Any

# Auto MPG (vega_datasets' `cars`) as a regression set: gaps filled or dropped, one-hot origin, standardised.
AUTO_MPG: dict[str, Any] = {
    "source": {"uri": "builtin://vega/cars"},
    "label": "Miles_per_Gallon",
    "cleaning": {"missing": {"default": "drop", "columns": {"Horsepower": "median"}}},
    "transforms": [{"type": "oneHot", "columns": ["Origin"]}, {"type": "standardize"}],
    "privacy": {"dropColumns": ["Name"]},
    "split": {"train": 0.7, "validation": 0.15, "test": 0.15},
}
