"""Structured JSON logs; every line carries the request id of the call it belongs to.

Every gRPC call writes one line (the access log), so formatting a line is kept cheap: the timestamp's
strftime once a second, one JSON encoder for every line, and none of the record fields no line shows
(caller's file and line, thread, process).
"""

import json
import logging
import os
import sys
import time

from kernel.context import request_id_var

# json.dumps(default=str) would build a new encoder per line.
_encode = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str, pid: int | None = None):
        super().__init__()
        self.component = component
        self.pid = pid  # a worker's lines say which worker wrote them
        self._second = -1
        self._stamp = ""

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # the handler's lock serializes format(), so this pair stays consistent
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self._time(record),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.pid:
            entry["pid"] = self.pid
        request_id = getattr(record, "request_id", "")
        if request_id:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)


_default_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args, **kwargs) -> logging.LogRecord:
    # Taken when the record is made, in the call's own context, not later when a handler formats it.
    record = _default_factory(*args, **kwargs)
    record.request_id = request_id_var.get()
    return record


logging.setLogRecordFactory(_record_with_request_id)


def configure(component: str, level: str = "INFO", with_pid: bool = False) -> None:
    # What the JSON lines never show is not gathered for every record (the logging HOWTO's "Optimization").
    logging._srcfile = None  # no stack walk for the caller's file and line
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component, os.getpid() if with_pid else None))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
