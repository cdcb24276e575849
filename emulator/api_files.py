"""files.getUploadURLExternal, the upload URL itself, files.completeUploadExternal, files.info."""

from __future__ import annotations

from aiohttp import web

from emulator.args import Args, Handler
from emulator.common import JSON, SlackError
from emulator.state import File, Workspace


def get_upload_url(ws: Workspace, a: Args) -> JSON:
    length = a.number("length", 0)
    if length <= 0:
        raise SlackError(
            "invalid_arguments", response_metadata={"messages": ["[ERROR] length must be positive"]}
        )
    f = File(
        ws.new_id("F"),
        a.text("filename"),
        a.text("filename"),
        length,
        alt_txt=a.text("alt_txt") or None,
        created=int(ws.clock()),
    )
    ws.files[f.id] = f
    return {"upload_url": f"{ws.base_url}/upload/{f.id}", "file_id": f.id}


def complete_upload(ws: Workspace, a: Args) -> JSON:
    items = a.json_value("files")
    if not isinstance(items, list) or not items:
        raise SlackError(
            "invalid_arguments",
            response_metadata={"messages": ["[ERROR] files must be a JSON array"]},
        )
    files: list[File] = []
    for item in items:
        f = ws.files.get(str(item.get("id"))) if isinstance(item, dict) else None
        if f is None or f.content is None:
            raise SlackError("file_not_found")
        if item.get("title"):
            f.title = str(item["title"])
        files.append(f)
    targets = [c for c in a.text("channels").split(",") if c]
    if a.has("channel_id"):
        targets.insert(0, a.text("channel_id"))
    channels = [ws.channel(c) for c in targets]
    for channel in channels:
        for f in files:
            f.channels.append(channel.id)
        ws.post(
            channel,
            a.text("initial_comment"),
            thread_ts=a.text("thread_ts") or None,
            files=[f.to_slack(ws.base_url) for f in files],
        )
    return {"files": [f.to_slack(ws.base_url) for f in files]}


def file_info(ws: Workspace, a: Args) -> JSON:
    f = ws.files.get(a.text("file"))
    if f is None or f.content is None:
        raise SlackError("file_not_found")
    return {"file": f.to_slack(ws.base_url)}


async def receive_upload(ws: Workspace, request: web.Request) -> web.Response:
    """The upload URL: store the bytes, answering as files.slack.com does."""
    f = ws.files.get(request.match_info["file_id"])
    if f is None:
        return web.Response(status=404, text="not found")
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        part = next((v for v in form.values() if isinstance(v, web.FileField)), None)
        data = part.file.read() if part is not None else b""
    else:
        data = await request.read()
    f.content = data
    return web.Response(text=f"OK - {len(data)}")


async def download(ws: Workspace, request: web.Request) -> web.Response:
    f = ws.files.get(request.match_info["file_id"])
    if f is None or f.content is None:
        return web.Response(status=404, text="file_not_found")
    return web.Response(body=f.content, content_type=str(f.to_slack(ws.base_url)["mimetype"]))


HANDLERS: dict[str, Handler] = {
    "files.getUploadURLExternal": get_upload_url,
    "files.completeUploadExternal": complete_upload,
    "files.info": file_info,
}
