"""The access log's fast path writes exactly the line the JSON formatter would, and steps aside when it must."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from datetime import datetime
from typing import Any

from gateway import logs

FIELDS = {"event": "request", "request_id": "r1", "route": "x", "client": "secret-key-123456", "status": 200}


def test_the_fast_line_is_the_formatters_line(access_lines: tuple[logs.AccessLines, io.StringIO]) -> None:
    fast, stream = access_lines
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


def test_any_other_logging_set_up_gets_real_records(access_lines: tuple[logs.AccessLines, io.StringIO]) -> None:
    fast, _ = access_lines
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


class _Counting(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


async def test_lines_of_one_loop_turn_go_out_in_one_write(access_lines: tuple[logs.AccessLines, io.StringIO]) -> None:
    fast, _ = access_lines
    stream = _Counting()
    fast.handler.setStream(stream)
    for i in range(3):
        fast.write({**FIELDS, "request_id": f"r{i}"})
    assert stream.getvalue() == ""  # still this turn of the loop
    await asyncio.sleep(0)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert stream.writes == 1


async def test_another_record_writes_the_waiting_access_lines_first(
    access_lines: tuple[logs.AccessLines, io.StringIO],
) -> None:
    fast, stream = access_lines
    fast.write(FIELDS)
    logging.getLogger("gateway").warning("after the request")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("event") or line["message"] for line in lines] == ["request", "after the request"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to write
    assert len(stream.getvalue().splitlines()) == 2


def test_waiting_lines_are_written_at_exit(tmp_path: Any) -> None:
    script = (
        "import asyncio, logging\n"
        "from gateway import logs\n"
        "logs.setup('info')\n"
        "async def main():\n"
        "    logs.access_lines().write({'event': 'request', 'request_id': 'last'})\n"
        "    raise SystemExit(0)\n"  # the loop ends before the scheduled flush runs
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["request_id"] for line in done.stderr.splitlines()] == ["last"]
