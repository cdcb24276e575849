"""schemathesis against the live server and its own `/v1/openapi.json`: no 5xx, and every
answer (status, headers, body) matches the document. A bounded number of examples."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.api_util import Api, api_harness, new_key

MAX_EXAMPLES = "12"


async def test_the_server_matches_its_openapi_document(redis_url: str, tmp_path: Path) -> None:
    async with api_harness(redis_url) as h:
        key = await new_key(h, "billing-bot")
        api = Api(h, key)
        try:
            status, doc, _ = await api.call("GET", "/v1/openapi.json", key="")
            assert status == 200 and doc["openapi"].startswith("3.1")
        finally:
            await api.close()
        st = Path(sys.executable).with_name("schemathesis")
        proc = await asyncio.create_subprocess_exec(
            str(st), "run", f"http://127.0.0.1:{h.bot.port}/v1/openapi.json",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                        "response_headers_conformance,response_schema_conformance,ignored_auth",
            "--max-examples", MAX_EXAMPLES, "--workers", "1", "--seed", "1",
            "--exclude-path", "/v1/events",  # an endless stream; its 401 is tested in test_api_keys
            "--request-timeout", "20", "-H", f"Authorization: Bearer {key}",
            cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-6000:]
    assert "openapi" in report.lower() or "passed" in report.lower()
