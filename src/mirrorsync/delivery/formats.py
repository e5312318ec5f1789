"""The request a webhook's ``format`` makes of a batch of events: pure functions.

``render(hook, message_id, created_at, events)`` and ``render_ping(...)`` give a
``Request``: method, URL, content type, body bytes and extra headers. The same
batch gives the same bytes on every attempt (its time is when it was formed).

- ``standard``: the signed mirrorsync payload (``payload.py``), unchanged.
- ``slack``: an incoming webhook's JSON, ``text`` (mrkdwn, ``&``, ``<``, ``>``
  escaped as Slack asks) and ``blocks`` of ``section`` mrkdwn text.
- ``discord``: an execute-webhook JSON, ``content`` (at most 2,000 characters) and
  one embed within Discord's limits; markdown neutralised, mentions disabled.
- ``teams``: a Workflows ("When a Teams webhook request is received") ``message``
  whose attachment is an Adaptive Card (``application/vnd.microsoft.card.adaptive``).
- ``matrix``: the client-server API's ``PUT /_matrix/client/v3/rooms/{room}/send/
  m.room.message/{txnId}`` with ``msgtype: m.text``, ``body`` and HTML
  ``formatted_body``; the transaction id is the batch's id, so a retry is not a
  second message.
- ``ntfy``: a plain-text publish with ``Title``, ``Tags`` and ``Click`` headers
  (no CR/LF, bounded, RFC 2047 for non-ASCII as ntfy decodes it).
- ``cloudevents``: one CloudEvents 1.0 event in structured mode
  (``application/cloudevents+json``) per batch, its ``data`` the events.
- ``email``: an RFC 5322 message (``message/rfc822``), text and HTML alternatives,
  its ``Message-ID`` the batch's id; ``delivery/mail.py`` sends it over SMTP.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.message
import email.policy
import email.utils
import html
import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mirrorsync.config import WebhookConfig
from mirrorsync.delivery import payload
from mirrorsync.delivery.summary import (
    PLAIN,
    Markup,
    Summary,
    bound,
    lines,
    ping_summary,
    plain_text,
    summarize,
    title,
)
from mirrorsync.store.eventlog import Event

JSON = "application/json"
CLOUDEVENTS = "application/cloudevents+json"
RFC822 = "message/rfc822"

# Documented limits of each service.
SLACK_SECTION_TEXT = 3000  # a section block's text
SLACK_BLOCKS = 50
DISCORD_CONTENT = 2000
DISCORD_EMBED_TITLE = 256
DISCORD_EMBED_DESCRIPTION = 4096
NTFY_MESSAGE_BYTES = 4096  # larger messages become attachments
HEADER_CHARS = 200  # ntfy's Title and Tags, before encoding


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to a webhook."""

    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    url: str | None = None  # None: the webhook's url


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- escaping ----------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as its formatting guide asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_MARKDOWN_RE = re.compile(r"([\\`*_~|<>\[\]#])")


def markdown_escape(text: str) -> str:
    """Markdown's emphasis, code, quote, heading, spoiler and link punctuation
    backslash-escaped, so a name is shown, not formatted (a ``(`` opens no link
    without the ``]`` before it, which is escaped)."""
    return _MARKDOWN_RE.sub(r"\\\1", text)


def _markdown_url(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


SLACK = Markup(
    slack_escape,
    lambda s: f"*{s}*",
    lambda url, text: f"<{slack_escape(url).replace('|', '%7C')}|{text}>",
)
MARKDOWN = Markup(
    markdown_escape, lambda s: f"**{s}**", lambda url, text: f"[{text}]({_markdown_url(url)})"
)
HTML = Markup(
    lambda s: html.escape(s, quote=True),
    lambda s: f"<strong>{s}</strong>",
    lambda url, text: f'<a href="{html.escape(url, quote=True)}">{text}</a>',
)


def header_value(text: str, limit: int = HEADER_CHARS) -> str:
    """A header value: one line, bounded; non-ASCII as an RFC 2047 encoded word."""
    text = bound(" ".join(text.split()), limit)  # CR, LF and tabs are gone
    if text.isascii() and text.isprintable():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _utf8_bound(text: str, limit: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode("utf-8", "ignore").encode("utf-8") + "…".encode()


# -- the formats ----------------------------------------------------------------


def slack(summary: Summary) -> Request:
    head = title(summary, SLACK)
    body = lines(summary, SLACK)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*"}}]
    blocks += [
        {"type": "section", "text": {"type": "mrkdwn", "text": bound(line, SLACK_SECTION_TEXT)}}
        for line in body[: SLACK_BLOCKS - 1]
    ]
    text = "\n".join([head, *("• " + line for line in body)])
    return Request(JSON, _encode({"text": text, "blocks": blocks}))


def discord(summary: Summary, created_at: str) -> Request:
    head = title(summary, MARKDOWN)
    embed: dict[str, Any] = {
        "title": bound(head, DISCORD_EMBED_TITLE),
        "description": bound(
            "\n".join("• " + line for line in lines(summary, MARKDOWN)) or head,
            DISCORD_EMBED_DESCRIPTION,
        ),
        "timestamp": created_at,
        "color": 0x2E7D32,
    }
    if summary.link:
        embed["url"] = summary.link
    return Request(
        JSON,
        _encode(
            {
                "content": bound(head, DISCORD_CONTENT),
                "embeds": [embed],
                "allowed_mentions": {"parse": []},  # no @everyone, role or user ping
            }
        ),
    )


def teams(summary: Summary) -> Request:
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": title(summary, MARKDOWN),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
        }
    ]
    body += [
        {"type": "TextBlock", "text": "- " + line, "wrap": True}
        for line in lines(summary, MARKDOWN)
    ]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if summary.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open", "url": summary.link}]
    message = {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }
    return Request(JSON, _encode(message))


def matrix_url(hook: WebhookConfig, txn_id: str) -> str:
    """The client-server API's send endpoint for the webhook's room (``url``: the homeserver)."""
    assert hook.room is not None, "checked by the configuration"
    room = urllib.parse.quote(hook.room, safe="")
    return (
        f"{hook.url.rstrip('/')}/_matrix/client/v3/rooms/{room}/send/m.room.message/"
        f"{urllib.parse.quote(txn_id, safe='')}"
    )


def matrix(summary: Summary, hook: WebhookConfig, txn_id: str) -> Request:
    items = "".join(f"<li>{line}</li>" for line in lines(summary, HTML))
    formatted = f"<p><strong>{title(summary, HTML)}</strong></p>" + (
        f"<ul>{items}</ul>" if items else ""
    )
    content = {
        "msgtype": "m.text",
        "body": plain_text(summary),
        "format": "org.matrix.custom.html",
        "formatted_body": formatted,
    }
    return Request(JSON, _encode(content), method="PUT", url=matrix_url(hook, txn_id))


def ntfy(summary: Summary) -> Request:
    text = "\n".join("- " + line for line in lines(summary, PLAIN)) or title(summary, PLAIN)
    headers = {
        "Title": header_value(title(summary, PLAIN)),
        "Tags": "package" if summary.ping is None else "bell",
    }
    link = summary.link
    if link and len(link) <= 2000 and link.isascii() and link.isprintable():
        headers["Click"] = link  # a URL or nothing: never a cut one
    return Request("text/plain; charset=utf-8", _utf8_bound(text, NTFY_MESSAGE_BYTES), headers)


def cloudevents(
    summary: Summary, hook: WebhookConfig, message_id: str, created_at: str, data: Any, kind: str
) -> Request:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": message_id,
        "source": f"/mirrorsync/webhooks/{hook.name}",
        "type": kind,
        "time": created_at,
        "datacontenttype": JSON,
    }
    single = summary.single
    if single is not None:
        event["subject"] = single.where
    event["data"] = {"summary": plain_text(summary), **data}
    return Request(f"{CLOUDEVENTS}; charset=utf-8", _encode(event))


def mail(summary: Summary, hook: WebhookConfig, message_id: str, created_at: str) -> Request:
    """One message: the summary as text and as HTML; the same bytes for the same batch."""
    assert hook.to and hook.from_, "checked by the configuration"
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = bound(title(summary, PLAIN), 200)
    message["From"] = hook.from_
    message["To"] = ", ".join(hook.to)
    when = dt.datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    message["Date"] = email.utils.format_datetime(when)
    message["Message-ID"] = f"<{message_id}@mirrorsync>"
    message.set_content(plain_text(summary) + "\n")
    items = "".join(f"<li>{line}</li>" for line in lines(summary, HTML))
    message.add_alternative(
        f"<html><body><p><strong>{title(summary, HTML)}</strong></p>"
        + (f"<ul>{items}</ul>" if items else "")
        + "</body></html>\n",
        subtype="html",
    )
    message.set_boundary(f"mirrorsync-{message_id}")  # not random: the same bytes each time
    return Request(RFC822, message.as_bytes())


# -- entry points --------------------------------------------------------------------


def render(
    hook: WebhookConfig, message_id: str, created_at: str, events: Sequence[Event]
) -> Request:
    """The request that delivers this batch to ``hook`` in its format."""
    if hook.format == "standard":
        return Request(JSON, payload.events_body(created_at, events))
    summary = summarize(events, hook.link)
    if hook.format == "cloudevents":
        data = {"events": [event.to_dict() for event in events]}
        return cloudevents(summary, hook, message_id, created_at, data, payload.EVENTS_TYPE)
    return _chat(hook, summary, message_id, created_at)


def render_ping(hook: WebhookConfig, message_id: str, at: str) -> Request:
    """A test message: ``mirrorsync.ping`` in the standard and CloudEvents formats,
    a line saying so in a chat."""
    if hook.format == "standard":
        return Request(JSON, payload.ping_body(at, hook.name))
    summary = ping_summary(hook.name)
    if hook.format == "cloudevents":
        data = {"webhook": hook.name}
        return cloudevents(summary, hook, message_id, at, data, payload.PING_TYPE)
    return _chat(hook, summary, message_id, at)


def _chat(hook: WebhookConfig, summary: Summary, message_id: str, created_at: str) -> Request:
    if hook.format == "slack":
        return slack(summary)
    if hook.format == "discord":
        return discord(summary, created_at)
    if hook.format == "teams":
        return teams(summary)
    if hook.format == "matrix":
        return matrix(summary, hook, message_id)
    if hook.format == "email":
        return mail(summary, hook, message_id, created_at)
    assert hook.format == "ntfy", hook.format
    return ntfy(summary)
