"""Structured logs: one JSON object a line, ``key=value`` fields parsed out."""

from __future__ import annotations

import json
import logging

from edgesplit.logs import JsonFormatter


def test_json_lines_carry_the_key_value_fields() -> None:
    record = logging.LogRecord(
        "cloud_node.server",
        logging.WARNING,
        __file__,
        1,
        "rejected request id=%d code=%s error=%s",
        (7, "shape", "bad"),
        None,
    )
    event = json.loads(JsonFormatter().format(record))
    assert event["level"] == "warning" and event["logger"] == "cloud_node.server"
    assert event["message"] == "rejected request id=7 code=shape error=bad"
    assert (event["id"], event["code"], event["error"]) == ("7", "shape", "bad")
    assert event["time"].count("T") == 1


def test_a_field_never_overwrites_the_envelope() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "level=evil message=no", (), None)
    event = json.loads(JsonFormatter().format(record))
    assert event["level"] == "info" and event["message"] == "level=evil message=no"
