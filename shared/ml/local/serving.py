"""Endpoints and deployments as local processes, speaking the Azure ML chat-completion scoring contract.

    python -m shared.ml.local.serving endpoint --state-dir DIR --endpoint NAME --port PORT
    python -m shared.ml.local.serving deployment --state-dir DIR --endpoint NAME --deployment NAME --port PORT

An endpoint server checks the key (`Authorization: Bearer <key>`, 401 otherwise), picks a deployment
(the `azureml-model-deployment` header, else at random by the traffic weights in its record), forwards
the request to that deployment's process on 127.0.0.1, counts it per deployment and minute, and logs
its status and latency (`request_log.jsonl`, read by the progressive-traffic gate). A
deployment with mirror traffic gets a copy of that share of the requests not pinned by the header; its
answers are dropped. A deployment process loads its registered model from the MLflow registry, then listens; it answers
`{"output": "<assistant text>"}` like Azure's chat-completion deployments.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shared.errors import BackendError
from shared.ml.local.store import LocalStore, read_json, write_json
from shared.ml.scoring import chat_messages
from shared.timestamps import iso as utc_iso

log = logging.getLogger("autopilot.local.serving")

DEPLOYMENT_HEADER = "azureml-model-deployment"
SCORE_PATH = "/score"
HEALTH_PATH = "/health"
FORWARD_TIMEOUT_SECONDS = 300.0
MAX_BODY_BYTES = 4 * 1024 * 1024


def choose_deployment(traffic: dict[str, int], pinned: str | None, pick: Callable[[list[str], list[int]], str]) -> str:
    """The deployment a request goes to; `LookupError` (with the reason) when there is none."""
    if pinned:
        if pinned not in traffic:
            raise LookupError(f"deployment {pinned} does not exist on this endpoint")
        return pinned
    weighted = [(name, weight) for name, weight in sorted(traffic.items()) if weight > 0]
    if not weighted:
        raise LookupError(
            "no valid deployments to route to: give a deployment traffic, or name one in the "
            f"{DEPLOYMENT_HEADER} header"
        )
    return pick([name for name, _ in weighted], [weight for _, weight in weighted])


def _weighted_choice(names: list[str], weights: list[int]) -> str:
    return random.choices(names, weights)[0]


def record_request(store: LocalStore, endpoint_name: str, deployment_name: str, moment: datetime) -> None:
    """Count one request for the deployment in its minute (what `requests_per_minute` reads)."""
    minute = utc_iso(moment.replace(second=0, microsecond=0))
    path = store.requests_path(endpoint_name)
    with store.lock():
        counts = read_json(path) or {}
        per_minute = counts.setdefault(deployment_name, {})
        per_minute[minute] = per_minute.get(minute, 0) + 1
        counts["_last_request_at"] = utc_iso(moment)
        write_json(path, counts)


def request_log_path(store: LocalStore, endpoint_name: str) -> Path:
    """One JSON line per answered request of the endpoint: what `deployment_health` reads."""
    return store.endpoint_dir(endpoint_name) / "request_log.jsonl"


def log_request(
    store: LocalStore, endpoint_name: str, deployment_name: str, status: int, latency_ms: float, *, pinned: bool
) -> None:
    """Append the request's deployment, status and latency; `pinned`: it named its deployment (a smoke test)."""
    line = {
        "at": utc_iso(datetime.now(timezone.utc)),
        "deployment": deployment_name,
        "status": status,
        "latency_ms": round(latency_ms, 1),
        "pinned": pinned,
    }
    path = request_log_path(store, endpoint_name)
    with store.lock(), path.open("a", encoding="utf-8") as log_file:
        log_file.write(json.dumps(line) + "\n")


class _JsonHandler(BaseHTTPRequestHandler):
    server_version = "autopilot-local-ml"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(413, {"error": f"request body over {MAX_BODY_BYTES} bytes"})
            return None
        return self.rfile.read(length)


class EndpointHandler(_JsonHandler):
    """Key check, routing by traffic or header, forwarding, request counting."""

    store: LocalStore
    endpoint_name: str
    pick: Callable[[list[str], list[int]], str] = staticmethod(_weighted_choice)
    # A number in [0, 1): a request is mirrored when it falls under the mirror share.
    chance: Callable[[], float] = staticmethod(random.random)

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:
        if self.path.split("?")[0] != SCORE_PATH:
            self._reply(404, {"error": f"no such path {self.path}; score at {SCORE_PATH}"})
            return
        if not self._authorised():
            self._reply(401, {"error": "missing or wrong key: send Authorization: Bearer <endpoint key>"})
            return
        body = self._body()
        if body is None:
            return
        record = self.store.read_endpoint(self.endpoint_name) or {}
        deployments = record.get("deployments", {})
        try:
            name = choose_deployment(
                {d: int(record.get("traffic", {}).get(d, 0)) for d in deployments},
                self.headers.get(DEPLOYMENT_HEADER),
                type(self).pick,
            )
        except LookupError as exc:
            self._reply(404, {"error": str(exc)})
            return
        record_request(self.store, self.endpoint_name, name, datetime.now(timezone.utc))
        pinned = bool(self.headers.get(DEPLOYMENT_HEADER))
        if not pinned:
            self._mirror(body, record, name)
        status, answer = self._forward_logged(body, int(deployments[name]["port"]), name, pinned=pinned)
        self._reply(status, answer, {DEPLOYMENT_HEADER: name})

    def _forward_logged(self, body: bytes, port: int, name: str, *, pinned: bool) -> tuple[int, Any]:
        """Forward, then log the answer's status and latency for the deployment's health."""
        started = time.perf_counter()
        status, answer = self._forward(body, port, name)
        log_request(self.store, self.endpoint_name, name, status, (time.perf_counter() - started) * 1000, pinned=pinned)
        return status, answer

    def _mirror(self, body: bytes, record: dict[str, Any], served_by: str) -> None:
        """Copy the request, in the background, to the deployment with mirror traffic, for its share of
        requests; its answer is dropped. Requests pinned to a deployment by the header are not copied."""
        for name, percent in (record.get("mirror_traffic") or {}).items():
            deployment = record.get("deployments", {}).get(name)
            if deployment is None or name == served_by or type(self).chance() * 100 >= int(percent):
                continue
            record_request(self.store, self.endpoint_name, name, datetime.now(timezone.utc))
            threading.Thread(
                target=self._forward_logged,
                args=(body, int(deployment["port"]), name),
                kwargs={"pinned": False},
                name=f"mirror-{name}",
                daemon=True,
            ).start()

    def _authorised(self) -> bool:
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        keys = self.store.endpoint_keys(self.endpoint_name).values()
        return any(hmac.compare_digest(given.strip().encode(), key.encode()) for key in keys)

    @staticmethod
    def _forward(body: bytes, port: int, name: str) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{SCORE_PATH}", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=FORWARD_TIMEOUT_SECONDS) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except OSError as exc:
            return 503, {"error": f"deployment {name} is not answering ({exc}); it may still be starting"}


class DeploymentHandler(_JsonHandler):
    """Scores one request at a time with the loaded model."""

    generate: Callable[[list[dict[str, str]], dict[str, Any]], str]
    lock = threading.Lock()

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._reply(200, {"status": "ready"})
        else:
            self._reply(404, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:
        if self.path.split("?")[0] != SCORE_PATH:
            self._reply(404, {"error": f"no such path {self.path}"})
            return
        body = self._body()
        if body is None:
            return
        try:
            request = json.loads(body)
            messages = chat_messages(request)
            parameters = request["input_data"].get("parameters") or {}
            if not isinstance(parameters, dict):
                raise BackendError("input_data.parameters must be an object")
        except (ValueError, BackendError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        with self.lock:
            text = type(self).generate(messages, parameters)
        self._reply(200, {"output": text})


def make_endpoint_server(store: LocalStore, endpoint_name: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundEndpointHandler", (EndpointHandler,), {"store": store, "endpoint_name": endpoint_name})
    return ThreadingHTTPServer(("127.0.0.1", port), handler)


def make_deployment_server(
    generate: Callable[[list[dict[str, str]], dict[str, Any]], str], port: int
) -> ThreadingHTTPServer:
    handler = type("BoundDeploymentHandler", (DeploymentHandler,), {"generate": staticmethod(generate)})
    return ThreadingHTTPServer(("127.0.0.1", port), handler)


def load_generator(
    store: LocalStore, model_name: str, model_version: str
) -> Callable[[list[dict[str, str]], dict[str, Any]], str]:
    """The registered model, loaded from the MLflow registry, as a function from a conversation to a reply."""
    import mlflow
    import torch

    from shared.ml.local import registry
    from shared.ml.local.conversations import generate_reply

    registry.use_store(store)
    components = mlflow.transformers.load_model(f"models:/{model_name}/{model_version}", return_type="components")
    model, tokenizer = components["model"], components["tokenizer"]
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return lambda messages, parameters: generate_reply(model, tokenizer, messages, parameters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a local endpoint server or deployment process")
    parser.add_argument("role", choices=("endpoint", "deployment"))
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--deployment")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # its HTTP logging would fill the log
    store = LocalStore(args.state_dir)
    if args.role == "endpoint":
        server = make_endpoint_server(store, args.endpoint, args.port)
    else:
        record = store.read_endpoint(args.endpoint) or {}
        deployment = record.get("deployments", {}).get(args.deployment)
        if deployment is None:
            log.error("deployment %s is not on endpoint %s", args.deployment, args.endpoint)
            return 1
        generate = load_generator(store, deployment["model_name"], deployment["model_version"])
        server = make_deployment_server(generate, args.port)
    log.info("%s %s listening on 127.0.0.1:%d", args.role, args.deployment or args.endpoint, args.port)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
