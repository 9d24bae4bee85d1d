"""A real OTLP/HTTP receiver on loopback, for the tests of Keel's OpenTelemetry spans.

It speaks the protocol a collector speaks: ``POST /v1/traces`` with an
``ExportTraceServiceRequest`` in protobuf (gzip when the exporter compresses), answered with an
``ExportTraceServiceResponse``. The messages are decoded with ``opentelemetry-proto``, the
protocol's own generated classes, and the spans kept as plain dicts.

Why this and not a back end from PyPI (Arize Phoenix, Jaeger): the test asserts on exactly what
any back end would receive, the wire messages and their attributes, not on one product's reading
of them; ``opentelemetry-proto`` is already installed (the exporter encodes with it) where Phoenix
would bring a web app, a database and hundreds of megabytes; and it starts in milliseconds, in
the test's process or beside a server, on a free port.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass
class Received:
    """What the receiver was sent: spans (dicts) and the requests' paths and content types."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(
        self, ready: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 20.0
    ) -> list[dict[str, Any]]:
        """The spans once ``ready(spans)`` holds (the exporter batches: spans arrive late)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                spans = list(self.spans)
            if ready(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)


def _handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            kind = self.headers.get("Content-Type") or ""
            with received.lock:
                received.requests.append((self.path, kind))
            if self.path != "/v1/traces" or kind != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            spans = []
            for resource in request.resource_spans:
                service = _attributes(resource.resource.attributes)
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        spans.append({
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex() or None,
                            "kind": span.kind,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "attributes": _attributes(span.attributes),
                            "events": [
                                {"name": e.name, "attributes": _attributes(e.attributes)}
                                for e in span.events
                            ],
                            "status": span.status.code,
                            "status_message": span.status.message,
                            "resource": service,
                            "scope": scope.scope.name,
                        })  # fmt: skip
            with received.lock:
                received.spans.extend(spans)
            out = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the test reads what was received

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """A receiver on a free loopback port: its endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``) and
    what it receives. Stopped on exit."""
    received = Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received))
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The one span called ``name``."""
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, (name, sorted(s["name"] for s in spans))
    return found[0]
