"""``/asyncapi.json`` and ``/asyncapi``: the event contracts, beside the query API's /docs.

The page is plain HTML rendered here (no script, no CDN): channels, then each message
with its headers and payload schema.
"""

import json
from html import escape
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from contracts.asyncapi import document

router = APIRouter(tags=["event contracts"])

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2rem; }
code, pre { background: #f5f5f5; border-radius: 3px; }
pre { padding: .6rem; overflow-x: auto; font-size: .85rem; }
table { border-collapse: collapse; } td, th { padding: .2rem .6rem; text-align: left; }
tr:nth-child(even) { background: #fafafa; } .superseded { color: #a60; }
"""


@router.get("/asyncapi.json", summary="The AsyncAPI 3 document of every topic")
def asyncapi_json() -> dict[str, Any]:
    return document()


@router.get("/asyncapi", response_class=HTMLResponse, summary="The same, as a page")
def asyncapi_html() -> HTMLResponse:
    return HTMLResponse(render(document()))


def render(spec: dict[str, Any]) -> str:
    info = spec["info"]
    messages: dict[str, Any] = spec["components"]["messages"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(info['title'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(info['title'])}</h1>",
        f"<p>AsyncAPI {escape(spec['asyncapi'])}, version {escape(info['version'])}. ",
        f"{escape(info['description'])} The document: <a href='asyncapi.json'>",
        "asyncapi.json</a>; the query API: <a href='docs'>/docs</a>.</p>",
        "<h2>Channels</h2><table><tr><th>topic</th><th>messages</th></tr>",
    ]
    for channel in spec["channels"].values():
        names = [ref["$ref"].rsplit("/", 1)[-1] for ref in channel["messages"].values()]
        links = ", ".join(f"<a href='#{escape(n)}'>{escape(n)}</a>" for n in names)
        parts.append(f"<tr><td><code>{escape(channel['address'])}</code></td><td>{links}</td></tr>")
    parts.append("</table><h2>Messages</h2>")
    for name, message in messages.items():
        superseded = any(tag["name"] == "superseded" for tag in message.get("tags", []))
        label = " <span class='superseded'>(superseded)</span>" if superseded else ""
        payload = message["payload"]
        data = payload.get("properties", {}).get("data")
        parts += [
            f"<h3 id='{escape(name)}'>{escape(name)}{label}</h3>",
            f"<p>{escape(message.get('description') or message.get('summary') or '')}</p>",
            "<h4>Headers</h4>",
            _fields_table(message["headers"]),
        ]
        if data is not None:
            parts += ["<h4>Data (the envelope's <code>data</code>)</h4>", _fields_table(data)]
        parts.append(f"<details><summary>Payload schema</summary>{_pre(payload)}</details>")
    parts.append("</body></html>")
    return "".join(parts)


def _fields_table(schema: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(path)}</code></td><td>{escape(kind)}</td>"
        f"<td>{'yes' if required else ''}</td><td>{escape(text)}</td></tr>"
        for path, kind, required, text in _fields(schema, "")
    )
    return (
        f"<table><tr><th>field</th><th>type</th><th>required</th><th>about</th></tr>{rows}</table>"
    )


def _fields(schema: dict[str, Any], prefix: str) -> list[tuple[str, str, bool, str]]:
    found = []
    required = set(schema.get("required", ()))
    for name, field in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        found.append((path, _kind(field), name in required, _about(field)))
        nested = field.get("items", field)
        if "properties" in nested:
            found += _fields(nested, f"{path}[]." if "items" in field else f"{path}.")
    return found


def _kind(field: dict[str, Any]) -> str:
    if "anyOf" in field:
        return " or ".join(_kind(branch) for branch in field["anyOf"])
    if "const" in field:
        return f"= {field['const']}"
    kind = str(field.get("type", "any"))
    if kind == "array" and "items" in field:
        return f"array of {_kind(field['items'])}"
    return kind


def _about(field: dict[str, Any]) -> str:
    limits = [
        f"{key} {field[key]}"
        for key in ("minLength", "maxLength", "minimum", "exclusiveMinimum", "minItems")
        if key in field
    ]
    if "pattern" in field:
        limits.append(f"pattern {field['pattern']}")
    text = field.get("description", "")
    return "; ".join(part for part in (text, ", ".join(limits)) if part)


def _pre(schema: Any) -> str:
    return f"<pre>{escape(json.dumps(schema, indent=2, ensure_ascii=False))}</pre>"
