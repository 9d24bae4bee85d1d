"""Tool machinery: typed specs and the one runner every call goes through.

Domains (``domains/``, chosen by ``KEEL_DOMAIN``) bring their own tools; none lives here.
"""

from tools.spec import ToolCall, ToolRegistry, ToolSpec

__all__ = ["ToolCall", "ToolRegistry", "ToolSpec"]
