"""A `keel` worker that dies (SIGKILL) in the window issue #12 found: after the ``execute`` task's
writes are saved (``put_writes``) and before the next checkpoint is written.

Run as ``python -m tests.integration.stranding_worker KEEL-ARGS...`` (for example ``resume THREAD
--approve``). The first time an ``execute`` task has its writes saved, the process kills itself.
The saver runs its calls on background threads, so the checkpoint that follows ``execute`` (the
one whose updated channels include ``result_verdict``: only ``execute``, whose pass ends with the
validator's result check, writes it) is
held back until then: whichever call comes first, the state left behind is always the same, the
checkpoint before ``execute`` with its writes pending on it. Both checkpointers are patched (the
class methods, not an instance), so the worker is Keel's own CLI on either.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

NODE = "execute"
AFTER_NODE = "result_verdict"
"""A channel only ``execute`` writes (its next node is chosen by a conditional edge, so no
``branch:to:`` channel names it alone: ``approve`` writes ``branch:to:execute`` too)."""


def _strand_after_execute() -> None:
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    for cls in (SqliteSaver, PostgresSaver):
        original_writes = cls.put_writes
        original_put = cls.put

        def put_writes(
            self: Any,
            config: Any,
            writes: Any,
            task_id: str,
            task_path: str = "",
            _original: Any = original_writes,
        ) -> None:
            _original(self, config, writes, task_id, task_path)
            if task_path.split(", ")[-1] == NODE and any(c == AFTER_NODE for c, _ in writes):
                # Saved and committed: die before anything else is written.
                os.kill(os.getpid(), signal.SIGKILL)

        def put(
            self: Any,
            config: Any,
            checkpoint: Any,
            metadata: Any,
            new_versions: Any,
            _original: Any = original_put,
        ) -> Any:
            if AFTER_NODE in (checkpoint.get("updated_channels") or ()):
                threading.Event().wait()  # never written: put_writes above kills the process
            return _original(self, config, checkpoint, metadata, new_versions)

        cls.put_writes = put_writes  # type: ignore[method-assign]
        cls.put = put  # type: ignore[method-assign]


if __name__ == "__main__":
    from keel.cli import main

    _strand_after_execute()
    sys.exit(main(sys.argv[1:]))
