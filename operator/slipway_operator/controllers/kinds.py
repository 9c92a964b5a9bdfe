"""Every kind's controller, registered once, in dependency order (a kind only references kinds before it).

A fifth kind is its API model (`api/<kind>.py`, listed in `api/kinds.py`) and its controller module, listed here.
"""

from __future__ import annotations

from slipway_operator.controllers import datasetprep, modeldeployment, trainingrun, tuningsweep
from slipway_operator.controllers.common import Controller, RunController

CONTROLLERS: tuple[Controller, ...] = (
    datasetprep.CONTROLLER,
    trainingrun.CONTROLLER,
    tuningsweep.CONTROLLER,
    modeldeployment.CONTROLLER,
)
BY_KIND: dict[str, Controller] = {c.kind: c for c in CONTROLLERS}
ORDER: dict[str, int] = {c.kind: i for i, c in enumerate(CONTROLLERS)}
RUNS: dict[str, RunController] = {c.kind: c for c in CONTROLLERS if isinstance(c, RunController)}
MODEL_KINDS: tuple[str, ...] = tuple(c.kind for c in RUNS.values() if c.produces_model)
