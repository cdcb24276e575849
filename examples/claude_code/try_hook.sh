#!/usr/bin/env bash
# Feed the hook one PreToolUse event by hand, as Claude Code would, and print its answer.
#   REDIS_URL=... HITL_PREFIX=... PYTHON=.venv/bin/python bash examples/claude_code/try_hook.sh
set -euo pipefail
"${PYTHON:-python3}" -m hitl hook claude-code --timeout "${TIMEOUT:-60}" <<'JSON'
{"session_id": "example", "cwd": "/tmp", "hook_event_name": "PreToolUse", "tool_name": "Bash",
 "tool_input": {"command": "rm -rf build/", "description": "Clean the build"}, "tool_use_id": "toolu_example"}
JSON
