"""Structured JSON logs (standard library ``logging``) carrying the record's ids.

Every recorded event is also logged on the ``keel.record`` logger with its ids (run, thread,
segment, checkpoint, LangSmith trace, node, step, sequence number), so a log line, a record event
and a LangSmith trace can be found from one another. ``keel`` commands write these lines to
``$KEEL_HOME/keel.log.jsonl``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and Keel's ids.

    Example:
        >>> record = logging.LogRecord("keel.record", logging.INFO, "", 0, "tool_call", None, None)
        >>> record.keel = {"run_id": "r"}
        >>> json.loads(JsonFormatter().format(record))["run_id"]
        'r'
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = getattr(record, "keel", None)
        if isinstance(ids, dict):
            line.update(ids)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def log_to_file(path: Path, logger_name: str = "keel") -> logging.Handler:
    """Append JSON lines from ``logger_name`` (and its children) to ``path``; the handler."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
