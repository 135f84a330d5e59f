"""Optional tracing: OpenTelemetry when OTEL_EXPORTER_OTLP_ENDPOINT is set, Datadog when
DD_TRACE_ENABLED=true; each only if its package is installed. Otherwise spans cost nothing.

Spans: `vectorizer.batch` (one per batch transaction), `vectorizer.stage` (load/parse,
transform, embed, write) and `vectorizer.embed_request` (one per provider HTTP request).
Exporters never block a run: OpenTelemetry exports in the background with a short timeout;
at exit every backend is flushed and shut down at once, within EXIT_FLUSH_SECONDS in total (an
unreachable collector or agent delays the exit by that much at most).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

EXIT_FLUSH_SECONDS = 2.0


class _Backend(Protocol):
    def span(
        self, name: str, attributes: dict[str, Any]
    ) -> contextlib.AbstractContextManager[Any]: ...

    def shutdown(self) -> None: ...


class _OpenTelemetry:
    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import trace

        # A provider handed in belongs to whoever made it: flushed at the end, not shut down.
        self._owned = tracer_provider is None
        if tracer_provider is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            service = os.environ.get("OTEL_SERVICE_NAME", "vectorizer-worker")
            # shut down by `shutdown()` with a bound, not by an unbounded atexit hook
            tracer_provider = TracerProvider(
                resource=Resource.create({"service.name": service}), shutdown_on_exit=False
            )
            tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(timeout=5), export_timeout_millis=5000)
            )
        self._provider = tracer_provider
        self._tracer = trace.get_tracer("vectorizer", tracer_provider=tracer_provider)

    @contextlib.contextmanager
    def span(self, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
        clean = {k: v for k, v in attributes.items() if isinstance(v, str | int | float | bool)}
        with self._tracer.start_as_current_span(name, attributes=clean) as current:
            yield current

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._provider.force_flush(timeout_millis=int(EXIT_FLUSH_SECONDS * 1000))
            if self._owned:
                self._provider.shutdown()


class _Datadog:
    def __init__(self) -> None:
        from ddtrace import tracer

        self._tracer = tracer
        # ddtrace gives its logger a plain handler of its own; its records reach the worker's
        # handler through the root logger anyway, formatted (JSON too) and redacted.
        ddtrace_log = logging.getLogger("ddtrace")
        for handler in list(ddtrace_log.handlers):
            if type(handler) is logging.StreamHandler:
                ddtrace_log.removeHandler(handler)

    @contextlib.contextmanager
    def span(self, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
        with self._tracer.trace(name, service="vectorizer-worker") as current:
            for key, value in attributes.items():
                current.set_tag(key, value)
            yield current

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._tracer.shutdown(timeout=EXIT_FLUSH_SECONDS)


_backends: list[_Backend] = []
_installed_provider: Any = None


def configure(tracer_provider: Any = None) -> list[str]:
    """Turns tracing on as the environment asks; returns the backends enabled.

    An OpenTelemetry tracer provider passed here (by a program that runs the worker in-process,
    or a test) is kept until `shutdown()`: the worker's own `configure()` at start keeps it.
    """
    global _installed_provider
    if tracer_provider is not None:
        _installed_provider = tracer_provider
    _backends.clear()
    enabled = []
    if _installed_provider is not None or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            _backends.append(_OpenTelemetry(_installed_provider))
            enabled.append("opentelemetry")
        except ImportError:
            log.warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed:"
                " pip install 'vectorizer[otel]'"
            )
    if os.environ.get("DD_TRACE_ENABLED", "").lower() in ("1", "true", "yes"):
        try:
            _backends.append(_Datadog())
            enabled.append("datadog")
        except ImportError:
            log.warning(
                "DD_TRACE_ENABLED is set but ddtrace is not installed:"
                " pip install 'vectorizer[datadog]'"
            )
    return enabled


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    if not _backends:
        yield
        return
    with contextlib.ExitStack() as stack:
        for backend in _backends:
            stack.enter_context(backend.span(name, attributes))
        yield


def shutdown() -> None:
    global _installed_provider
    # Side by side and bounded: a backend still waiting for an unreachable collector when the
    # time is up is left behind (a daemon thread; its spans are dropped).
    threads = [
        threading.Thread(target=backend.shutdown, name="tracing-shutdown", daemon=True)
        for backend in _backends
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    _backends.clear()
    _installed_provider = None
