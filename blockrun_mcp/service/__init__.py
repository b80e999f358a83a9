"""What the tools do: one module per family of tools (chat, images, video, models, account),
their arguments checked in arguments.py, their failures put into words in failures.py, all wired
together in core.py."""

from blockrun_mcp.service.core import BlockrunService, ServiceOptions
from blockrun_mcp.service.failures import ToolFailure

__all__ = ["BlockrunService", "ServiceOptions", "ToolFailure"]
