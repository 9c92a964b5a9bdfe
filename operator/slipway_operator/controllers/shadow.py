"""The shadow stage's gate (`rollout.shadow`); pure.

During the stage the candidate's servers answer copies of live requests that the stable servers send them (users
only get the stable answers). Two sources are read, both as windows since the stage started: the shadow's own
/metrics (copies answered, 5xx, latency; judged by the canary's `analysis` like a canary step) and the stable
servers' comparison counters (rows compared, labels that agree, summed relative difference; judged by
`minAgreement` or `maxRelativeDifference`). Fewer than `minRequests` copies judge nothing: inconclusive.
"""

from __future__ import annotations

import math
from typing import Any

from slipway_operator.api.modeldeployment import Analysis, Shadow
from slipway_operator.controllers.health import FAILED, INCONCLUSIVE, PASSED, ms
from slipway_operator.servermetrics import Traffic


def measured(stable: Traffic | None, shadow: Traffic | None) -> dict[str, Any]:
    """`status.shadowTraffic` (without revision and verdict) from the two windows."""
    copies = stable.shadow if stable else {}
    rows = int(copies.get("rows", 0))
    classification = (stable.shadow_task if stable else "") != "regression"
    p99 = shadow.quantile_ms(0.99) if shadow else None
    stable_p99 = stable.quantile_ms(0.99) if stable else None
    return {
        "requests": shadow.requests if shadow else 0,
        "errorRate": round(shadow.error_rate, 6) if shadow else 0.0,
        "p99LatencyMs": None if p99 is None or math.isinf(p99) else p99,
        "stableP99LatencyMs": None if stable_p99 is None or math.isinf(stable_p99) else stable_p99,
        "rows": rows,
        "agreement": round(copies.get("agreed", 0) / rows, 6) if rows and classification else None,
        "relativeDifference": round(copies.get("difference", 0) / rows, 6) if rows and not classification else None,
        "failed": int(copies.get("failed", 0)),
        "dropped": int(copies.get("dropped", 0)),
    }


def gate(
    spec: Shadow, analysis: Analysis, ready: int, seen: dict[str, Any], shadow: Traffic | None, scrape_error: str | None
) -> tuple[str, str]:
    """Whether the shadow stage passed, failed or cannot be judged yet, and what was measured (`seen`: `measured`)."""
    if ready < 1:
        return FAILED, "no shadow replica became ready within server.startupTimeoutSeconds"
    if shadow is None:
        return FAILED, f"the shadow's /metrics could not be read ({scrape_error or 'no replica answered'})"
    if seen["requests"] < spec.min_requests or not seen["rows"]:
        why = f"{seen['requests']} copies of requests reached the shadow; rollout.shadow.minRequests is "
        why += str(spec.min_requests)
        if seen["failed"] or seen["dropped"]:
            why += f" ({seen['failed']} copies failed, {seen['dropped']} dropped by the stable servers)"
        return INCONCLUSIVE, why
    words = (
        f"shadow error rate {seen['errorRate']:.2%} over {seen['requests']} copies, p99 {ms(seen['p99LatencyMs'])} "
        f"(stable {ms(seen['stableP99LatencyMs'])})"
    )
    if seen["errorRate"] > analysis.max_error_rate:
        return FAILED, f"{words}: error rate above rollout.canary.analysis.maxErrorRate {analysis.max_error_rate:.2%}"
    if seen["p99LatencyMs"] is not None and seen["p99LatencyMs"] > analysis.max_p99_latency_ms:
        return FAILED, f"{words}: p99 above rollout.canary.analysis.maxP99LatencyMs {analysis.max_p99_latency_ms:g} ms"
    if seen["agreement"] is not None:
        words += f"; agrees with the stable model on {seen['agreement']:.2%} of {seen['rows']} rows"
        if seen["agreement"] < spec.min_agreement:
            return FAILED, f"{words}, below rollout.shadow.minAgreement {spec.min_agreement:.2%}"
    else:
        difference = seen["relativeDifference"]
        words += f"; mean relative difference from the stable model {difference:.4g} over {seen['rows']} rows"
        if seen["relativeDifference"] > spec.max_relative_difference:
            return FAILED, f"{words}, above rollout.shadow.maxRelativeDifference {spec.max_relative_difference:g}"
    return PASSED, words
