#!/bin/sh
# Claude Code: run this once in a terminal. `--scope user` makes blockrun available in every project;
# use `--scope project` to write a .mcp.json for your team instead (or copy claude-code.mcp.json).
claude mcp add blockrun --scope user -e BLOCKRUN_NETWORK=base -e BLOCKRUN_SESSION_BUDGET_USD=1.00 -e BLOCKRUN_MAX_PER_CALL_USD=0.50 -e BLOCKRUN_DAILY_BUDGET_USD=5.00 -- uvx blockrun-mcp
