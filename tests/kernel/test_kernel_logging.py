"""JSON-lines logging: every record one JSON object, also kopf's per-object records.

kopf's object loggers attach the operator's settings (which hold asyncio queues) and the
object's reference to every record. Before the fix python-json-logger tried to serialise
the settings, raised ``TypeError: cannot pickle '_queue.SimpleQueue'`` and logging printed a
``--- Logging error ---`` traceback instead of the line.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import kopf
import pytest
from kopf._core.actions.loggers import ObjectLogger

from cdb.core.logging import ThrottledWarning, configure_logging


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The root handler's output, and Python's own 'Logging error' reports, in one buffer."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("operator", "INFO")
    try:
        yield stream
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_a_kopf_object_record_is_one_json_line_with_the_object(captured: io.StringIO) -> None:
    body = kopf.Body(
        {
            "apiVersion": "cdb.io/v1alpha1",
            "kind": "TradingBot",
            "metadata": {"name": "mexc-momentum", "namespace": "cdb", "uid": "u-1"},
        }
    )
    logger = ObjectLogger(body=body, settings=kopf.OperatorSettings())
    logger.error("handler failed: %s", "boom")

    lines = captured.getvalue().splitlines()
    assert "Logging error" not in captured.getvalue(), captured.getvalue()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["message"] == "handler failed: boom"
    assert record["level"] == "ERROR"
    assert record["service"] == "operator"
    assert record["k8s"] == {
        "apiVersion": "cdb.io/v1alpha1",
        "kind": "TradingBot",
        "namespace": "cdb",
        "name": "mexc-momentum",
        "uid": "u-1",
    }
    assert "settings" not in record


def test_an_unserialisable_extra_becomes_its_text_not_a_traceback(
    captured: io.StringIO,
) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    logging.getLogger("cdb.test").warning("odd extra", extra={"thing": Opaque()})
    lines = captured.getvalue().splitlines()
    assert len(lines) == 1, captured.getvalue()
    assert json.loads(lines[0])["thing"] == "<opaque>"


def test_a_flood_of_one_warning_is_one_line_per_interval_saying_what_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    warn = ThrottledWarning(logging.getLogger("cdb.flood"), "frame refused", 10.0, lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="cdb.flood"):
        for i in range(1000):  # a thousand bad frames within the same second
            warn(reason=f"frame {i}")
        now[0] += 10.0
        warn(reason="frame 1000")
    assert [r.getMessage() for r in caplog.records] == ["frame refused"] * 2
    first, second = caplog.records
    assert first.reason == "frame 0" and not hasattr(first, "suppressed")  # type: ignore[attr-defined]
    assert second.reason == "frame 1000" and second.suppressed == 999  # type: ignore[attr-defined]
