"""The inference server over HTTP (aiohttp): the OIP v2 REST endpoints, /metrics, and drift as JSON.

The HTTP layer only adapts: parsing and answers are in `protocol`, batching in `batcher`, drift in `drift`.
Bad requests get a 4xx with `{"error": message}` and the server keeps serving. On SIGTERM readiness drops
first, new requests are refused with 503, in-flight ones finish, then it exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from slipway_trainer.artifacts import (
    DRIFT_METRIC,
    GROUP_QUALITY_METRIC,
    GROUP_ROWS_METRIC,
    IN_FLIGHT_METRIC,
    LATENCY_METRIC,
    QUALITY_METRIC,
    QUALITY_ROWS_METRIC,
    REQUESTS_METRIC,
    SHADOW_AGREED_METRIC,
    SHADOW_DIFFERENCE_METRIC,
    SHADOW_REQUESTS_METRIC,
    SHADOW_ROWS_METRIC,
)
from slipway_trainer.config.serve import ServeConfig
from slipway_trainer.serve import feedback, protocol
from slipway_trainer.serve.batcher import Batcher
from slipway_trainer.serve.drift import DriftMonitor
from slipway_trainer.serve.model import ServedModel
from slipway_trainer.serve.payloads import PayloadLog, Privacy, image_layout
from slipway_trainer.serve.peers import FORWARDED, Peers
from slipway_trainer.serve.shadow import SHADOW, Mirror

log = logging.getLogger("slipway.serve")
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_torchscript"}


class Metrics:
    def __init__(self, name: str) -> None:
        self.registry = CollectorRegistry()
        self.name = name
        self.requests = Counter(
            REQUESTS_METRIC,
            "Inference requests by model and HTTP status code",
            ["model", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            LATENCY_METRIC,
            "Inference request latency",
            ["model", "code"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.batch = Histogram(
            "slipway_inference_batch_rows",
            "Rows per model call (dynamic batching)",
            ["model"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.queue = Gauge(
            "slipway_inference_queue_depth", "Requests waiting for a model call", ["model"], registry=self.registry
        )
        self.in_flight = Gauge(
            IN_FLIGHT_METRIC, "Inference requests being answered now", ["model"], registry=self.registry
        )
        self.predictions = Counter(
            "slipway_predictions", "Predicted classes", ["model", "label"], registry=self.registry
        )
        self.values = Histogram(
            "slipway_prediction_value", "Predicted values (regression)", ["model"], registry=self.registry
        )
        self.feature_mean = Gauge(
            "slipway_input_feature_mean",
            "Mean of a numeric input feature over the drift window",
            ["model", "feature"],
            registry=self.registry,
        )
        self.drift = Gauge(
            DRIFT_METRIC,
            "Drift score of an input feature against the training profile",
            ["model", "feature", "method"],
            registry=self.registry,
        )
        self.drifted = Gauge(
            "slipway_drifted_features",
            "Input features whose drift score is above the threshold",
            ["model"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "slipway_feedback",
            "Ground-truth feedback bodies by outcome (accepted, invalid, unknown_id, duplicate, forwarded)",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.quality = Gauge(
            QUALITY_METRIC,
            "Live quality over the feedback window (accuracy, macro_f1 or mae, rmse)",
            ["model", "metric"],
            registry=self.registry,
        )
        self.quality_rows = Gauge(
            QUALITY_ROWS_METRIC, "Feedback rows in the live quality window", ["model"], registry=self.registry
        )
        self.group_quality = Gauge(
            GROUP_QUALITY_METRIC,
            "Live quality of each group that feedback named (the most frequent 20 in the window)",
            ["model", "group", "metric"],
            registry=self.registry,
        )
        self.group_rows = Gauge(
            GROUP_ROWS_METRIC, "Feedback rows of each group in the window", ["model", "group"], registry=self.registry
        )
        self.payload_rows = Counter(
            "slipway_payload_rows",
            "Payload and feedback rows of the payload log by outcome (written, dropped, failed)",
            ["model", "kind", "outcome"],
            registry=self.registry,
        )
        self.shadow_requests = Counter(
            SHADOW_REQUESTS_METRIC,
            "Copies of requests sent to the shadow candidate, by outcome (answered, failed, dropped)",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.shadow_rows = Counter(
            SHADOW_ROWS_METRIC,
            "Rows the shadow answered, compared with this server's (task: how they were compared)",
            ["model", "task"],
            registry=self.registry,
        )
        self.shadow_agreed = Counter(
            SHADOW_AGREED_METRIC,
            "Compared rows whose labels agree (classification)",
            ["model", "task"],
            registry=self.registry,
        )
        self.shadow_difference = Counter(
            SHADOW_DIFFERENCE_METRIC,
            "Summed symmetric relative difference of the compared values (regression)",
            ["model", "task"],
            registry=self.registry,
        )


class Server:
    def __init__(
        self,
        config: ServeConfig,
        model: ServedModel,
        profile: dict[str, Any] | None,
        privacy: Privacy | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.name = config.model_name
        self.metrics = Metrics(self.name)
        batching = config.server.batching
        self.batcher = Batcher(
            model.predict,
            batching.max_batch_size,
            batching.max_latency_ms,
            on_batch=lambda rows: self.metrics.batch.labels(self.name).observe(rows),
            in_flight=lambda: self.in_flight,
        )
        drift = config.monitoring.drift
        self.drift = (
            DriftMonitor(profile, drift.method, drift.threshold, drift.window_size)
            if (drift.enabled and profile)
            else None
        )
        quality = config.monitoring.quality
        self.predictions = feedback.Predictions(quality.max_predictions)
        self.quality = feedback.LiveQuality(model.task, quality.window_size)
        self.privacy = privacy or Privacy()
        payload_log = config.monitoring.payload_log
        self.payloads = (
            PayloadLog(payload_log, config.model_version, self.privacy, self._count_payload_rows, image_layout(model))
            if payload_log.enabled
            else None
        )
        self.peers = Peers(config.peers) if config.peers else None
        self.mirror = Mirror(config.mirror, self.name, model.task, self._count_shadow) if config.mirror else None
        self.ready = False
        self.stopping = False
        self.in_flight = 0
        self.metrics.in_flight.labels(self.name).set_function(lambda: self.in_flight)

    def _count_payload_rows(self, kind: str, outcome: str, rows: int) -> None:
        self.metrics.payload_rows.labels(self.name, kind, outcome).inc(rows)

    def _count_shadow(self, outcome: str, rows: int, agreed: int, summed: float) -> None:
        m = self.metrics
        m.shadow_requests.labels(self.name, outcome).inc()
        task = self.model.task
        m.shadow_rows.labels(self.name, task).inc(rows)
        m.shadow_agreed.labels(self.name, task).inc(agreed)
        m.shadow_difference.labels(self.name, task).inc(summed)

    # --- routes -----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.server.limits.max_body_bytes)
        app.add_routes(
            [
                web.get("/v2/health/live", self.live),
                web.get("/v2/health/ready", self.ready_route),
                web.get("/v2", self.server_metadata),
                web.get("/v2/models/{name}", self.model_metadata),
                web.get("/v2/models/{name}/ready", self.model_ready),
                web.post("/v2/models/{name}/infer", self.infer),
                web.get("/v2/models/{name}/drift", self.drift_route),
                web.post("/v2/models/{name}/feedback", self.feedback_route),
                web.get("/v2/models/{name}/quality", self.quality_route),
                web.get("/metrics", self.prometheus),
            ]
        )
        return app

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready_route(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": self.is_ready}, status=200 if self.is_ready else 503)

    @property
    def is_ready(self) -> bool:
        return self.ready and not self.stopping

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self.server_info())

    def server_info(self) -> dict[str, Any]:
        from slipway_trainer import __version__

        return {"name": "slipway", "version": __version__, "extensions": ["drift", "feedback", "quality"]}

    def model_info(self) -> dict[str, Any]:
        platform = PLATFORMS[self.model.format]
        return protocol.metadata(self.model.transform, self.name, self.config.model_version, platform)

    def _check_name(self, request: web.Request) -> None:
        self.check_name(request.match_info["name"])

    def check_name(self, name: str) -> None:
        if name != self.name:
            raise protocol.ProtocolError(404, f"model {name!r} is not served here (this server serves {self.name!r})")

    async def model_metadata(self, request: web.Request) -> web.Response:
        return await self._guard(request, self.model_info)

    async def model_ready(self, request: web.Request) -> web.Response:
        try:
            self._check_name(request)
        except protocol.ProtocolError as err:
            return web.json_response({"error": err.message}, status=err.status)
        return web.json_response({"name": self.name, "ready": self.is_ready}, status=200 if self.is_ready else 503)

    async def drift_route(self, request: web.Request) -> web.Response:
        return await self._guard(request, lambda: self.drift.report() if self.drift else {"enabled": False})

    async def quality_route(self, request: web.Request) -> web.Response:
        return await self._guard(request, self.quality.report)

    async def feedback_route(self, request: web.Request) -> web.Response:
        """Ground truth for earlier requests (see `feedback`): 200 with the window's quality, or a 4xx naming the
        problem; a refused body changes nothing."""
        try:
            self._check_name(request)
            body = await self._json(request)
            rows = feedback.parse(
                body, self.predictions, self.model.transform, self.config.server.limits.max_rows_per_request
            )
        except protocol.ProtocolError as err:
            self.metrics.feedback.labels(self.name, "invalid").inc()
            return web.json_response({"error": err.message}, status=err.status)
        except feedback.FeedbackError as err:
            if err.none_known and self.peers is not None and FORWARDED not in request.headers:
                relayed = await self.peers.forward(request.path, await request.read())
                if relayed is not None:  # the replica that answered those requests took (or refused) it
                    self.metrics.feedback.labels(self.name, "forwarded").inc()
                    return web.Response(status=relayed[0], body=relayed[1], content_type="application/json")
            if not (err.none_known and FORWARDED in request.headers):  # a peer's question is counted there
                self.metrics.feedback.labels(self.name, err.outcome).inc()
            return web.json_response({"error": err.message}, status=err.status)
        self.quality.add(rows)
        if self.payloads is not None:
            self.payloads.log_feedback(rows, time.time())
        self.metrics.feedback.labels(self.name, "accepted").inc()
        return web.json_response({"accepted": len(rows), "quality": self.quality.report()})

    async def _json(self, request: web.Request) -> Any:
        try:
            return await request.json(loads=json.loads)
        except web.HTTPRequestEntityTooLarge:
            raise protocol.ProtocolError(
                413,
                f"the request body is larger than {self.config.server.limits.max_body_bytes} bytes "
                "(server.limits.maxBodyBytes)",
            ) from None
        except RecursionError:
            raise protocol.ProtocolError(400, "the request body is nested too deeply to read") from None
        except (ValueError, UnicodeDecodeError) as err:
            raise protocol.ProtocolError(400, f"the request body is not valid JSON: {err}") from err

    async def _guard(self, request: web.Request, answer: Any) -> web.Response:
        try:
            self._check_name(request)
            return web.json_response(answer())
        except protocol.ProtocolError as err:
            return web.json_response({"error": err.message}, status=err.status)

    async def infer(self, request: web.Request) -> web.Response:
        start = time.perf_counter()
        name, shadow = request.match_info["name"], SHADOW in request.headers
        status, body = await self.predict(name, lambda: self._json(request), shadow)
        self.count(status, start)
        return web.json_response(body, status=status)

    def count(self, status: int, start: float) -> None:
        """An inference request in /metrics (REST or gRPC, by its HTTP status)."""
        self.metrics.requests.labels(self.name, str(status)).inc()
        self.metrics.latency.labels(self.name, str(status)).observe(time.perf_counter() - start)

    async def predict(self, name: str, read: Callable[[], Awaitable[Any]], shadow: bool = False) -> tuple[int, Any]:
        """One inference request whatever its protocol: `read` gives its body in the OIP v2 JSON form; the answer is
        (HTTP status, answer or {"error": message})."""
        if not self.is_ready:
            return 503, {"error": "the server is not ready (loading, or shutting down)"}
        self.in_flight += 1
        try:
            self.check_name(name)
            body = await read()
            parsed = protocol.parse(body, self.model.transform, self.config.server.limits.max_rows_per_request)
            parsed.table = self.privacy.apply(parsed.table)
            x = protocol.features(parsed, self.model.transform)
            self.metrics.queue.labels(self.name).set(self.batcher.depth)
            outputs = await self.batcher.submit(x)
            if parsed.id is None:  # the answer carries an id to send feedback with
                parsed.id = uuid.uuid4().hex
            answer, predictions = protocol.answer(
                parsed, outputs, self.model.transform, self.name, self.config.model_version
            )
            if shadow:  # a copy for a candidate in shadow: compared by its sender, nothing more
                self._count_predictions(predictions)
                return 200, answer
            self._observe(parsed, predictions)
            if self.mirror is not None:
                self.mirror.offer(body, predictions)
            return 200, answer
        except protocol.ProtocolError as err:
            return err.status, {"error": err.message}
        except Exception as err:  # a bug or a model failure: 500, logged, and the server keeps serving
            log.exception("inference failed")
            return 500, {"error": f"inference failed: {type(err).__name__}: {err}"}
        finally:
            self.in_flight -= 1

    def _observe(self, parsed: protocol.Request, predictions: list[Any]) -> None:
        """What a served request leaves behind: its predictions remembered for feedback, counted in /metrics,
        maybe logged, and its inputs in the drift window."""
        assert parsed.id is not None
        now = time.time()
        self.predictions.remember(parsed.id, predictions, now)
        if self.payloads is not None and self.payloads.sampled():
            self.payloads.log_request(parsed.id, parsed.table, predictions, now)
        self._count_predictions(predictions)
        if self.drift is not None:
            self.drift.observe(parsed.table)

    def _count_predictions(self, predictions: list[Any]) -> None:
        for value in predictions:
            if self.model.task == "classification":
                self.metrics.predictions.labels(self.name, str(value)).inc()
            else:
                self.metrics.values.labels(self.name).observe(value)

    async def prometheus(self, request: web.Request) -> web.Response:
        if self.drift is not None:
            report = self.drift.report()
            for feature, score in report["scores"].items():
                self.metrics.drift.labels(self.name, feature, self.drift.method).set(score)
            self.metrics.drifted.labels(self.name).set(len(report["drifted"]))
            for feature, window in self.drift.windows.items():
                if self.drift.profile[feature]["type"] == "numeric" and window:
                    self.metrics.feature_mean.labels(self.name, feature).set(float(np.mean(window)))
        for metric, value in self.quality.metrics().items():
            self.metrics.quality.labels(self.name, metric).set(value)
        self.metrics.quality_rows.labels(self.name).set(len(self.quality.window))
        self.metrics.group_quality.clear()  # groups that left the window leave /metrics
        self.metrics.group_rows.clear()
        for group, measured in self.quality.groups().items():
            self.metrics.group_rows.labels(self.name, group).set(measured["rows"])
            for metric, value in measured["metrics"].items():
                self.metrics.group_quality.labels(self.name, group, metric).set(value)
        self.metrics.queue.labels(self.name).set(self.batcher.depth)
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- life cycle -------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """One request through the whole path (parse, privacy, features, model, answer) before readiness, so the
        first client does not pay for lazy initialisation: pyarrow imports pandas on its first conversion, about
        250 ms on this machine, which was the p99 of a fresh canary's first step."""
        self.model.warm_up()
        transform = self.model.transform
        try:
            parsed = protocol.parse(protocol.example(transform), transform, max_rows=1)
            parsed.table = self.privacy.apply(parsed.table)
            outputs = self.model.predict(protocol.features(parsed, transform))
            protocol.answer(parsed, outputs, transform, self.name, self.config.model_version)
        except Exception as err:  # never a reason not to serve: the first request is only slower
            log.warning("the warm-up request failed (the first request may be slow): %s", err)

    async def serve(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, shutdown_timeout=30)
        await site.start()
        port = runner.addresses[0][1]
        grpc_server, grpc_port = None, None
        if self.config.grpc_port is not None:
            from slipway_trainer.serve import grpc_v2

            limit = self.config.server.limits.max_body_bytes
            grpc_server, grpc_port = await grpc_v2.start(self, self.config.host, self.config.grpc_port, limit)
        self.batcher.start()
        if self.payloads is not None:
            self.payloads.start()
        if self.mirror is not None:
            self.mirror.start()
        self.warm_up()
        self.ready = True
        also = f" and grpc://{self.config.host}:{grpc_port}" if grpc_server else ""
        log.info("serving %s (%s on %s) on http://%s:%s%s", self.name, self.model.format, self.model.device,
                 self.config.host, port, also)  # fmt: skip
        if self.config.ready_file:
            Path(self.config.ready_file).write_text(json.dumps({"port": port, "grpcPort": grpc_port}))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.stopping = True  # readiness drops first; new inference requests get 503
        log.info("shutting down: finishing %d in-flight requests", self.in_flight)
        deadline = loop.time() + 30
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if grpc_server is not None:  # new calls refused, calls in flight finish
            await grpc_server.stop(grace=5)
        await self.batcher.close()
        if self.payloads is not None:  # the last buffered rows reach the store before the process ends
            await asyncio.to_thread(self.payloads.close)
        if self.peers is not None:
            await self.peers.close()
        if self.mirror is not None:  # copies still queued are not sent: the stage counts what was answered
            await self.mirror.close()
        await runner.cleanup()
