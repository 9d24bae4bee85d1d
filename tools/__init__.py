"""Tool machinery: typed specs and the one runner every call goes through.

The example domain lives in ``tools/demo/``; replacing it does not touch this package.
"""

from tools.spec import ToolCall, ToolRegistry, ToolSpec

__all__ = ["ToolCall", "ToolRegistry", "ToolSpec"]
