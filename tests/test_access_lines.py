"""The access log's fast path writes exactly the line the JSON formatter would, and steps aside when it must."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from gateway import logs

FIELDS = {"event": "request", "request_id": "r1", "route": "x", "client": "secret-key-123456", "status": 200}


@pytest.fixture
def configured() -> Iterator[tuple[logs.AccessLines, io.StringIO]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    formatter = logs.setup("info")
    formatter.redactor.source = lambda: ["secret-key-123456"]
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    fast = logs.access_lines()
    assert fast is not None
    try:
        yield fast, stream
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_the_fast_line_is_the_formatters_line(configured: tuple[logs.AccessLines, io.StringIO]) -> None:
    fast, stream = configured
    fast.write(FIELDS)
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "m", None, None)
    record.fields = FIELDS
    fast_line = json.loads(stream.getvalue())
    slow_line = json.loads(fast.formatter.format(record))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", fast_line["ts"])
    assert abs(datetime.fromisoformat(fast_line["ts"]).timestamp() - record.created) < 5
    assert {**fast_line, "ts": ""} == {**slow_line, "ts": ""}
    assert list(fast_line) == list(slow_line)  # same keys in the same order
    assert fast_line["client"] == logs.REDACTED  # and the same redaction


def test_any_other_logging_set_up_gets_real_records(configured: tuple[logs.AccessLines, io.StringIO]) -> None:
    fast, _ = configured
    root = logging.getLogger()
    pytests = [h for h in root.handlers if h is not fast.handler]  # pytest's own capture handlers
    for h in pytests:
        root.removeHandler(h)
    try:
        _check_it_steps_aside()
    finally:
        for h in pytests:
            root.addHandler(h)


def _check_it_steps_aside() -> None:
    assert logs.access_lines() is not None  # exactly what gateway serve set up
    extra = logging.NullHandler()
    logging.getLogger().addHandler(extra)  # what pytest's caplog does
    try:
        assert logs.access_lines() is None
    finally:
        logging.getLogger().removeHandler(extra)
    assert logs.access_lines() is not None
    logging.getLogger("gateway.access").setLevel(logging.WARNING)  # access lines switched off
    try:
        assert logs.access_lines() is None
    finally:
        logging.getLogger("gateway.access").setLevel(logging.NOTSET)
