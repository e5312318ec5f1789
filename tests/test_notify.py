"""Notifications where people are: each webhook ``format`` delivered by a real sync to
a real receiver on loopback, asserted against the fields its service documents; and
Standard Webhooks' asymmetric ``v1a`` signature beside the HMAC ``v1`` one."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import html.parser
import json
import os
import re
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from conftest import REPO, run_cli, sync
from mirrorsync.config import WebhookFormat, config_to_dict, load_config
from mirrorsync.delivery import manage
from mirrorsync.delivery.formats import header_value, markdown_escape, slack_escape
from mirrorsync.delivery.signing import parse_ed25519_key, public_key_text
from mirrorsync.delivery.summary import SAMPLE, plain_text, summarize
from mirrorsync.errors import ConfigError
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store.eventlog import Event
from receiver import Received, Receiver, new_secret
from test_webhooks import parse_hooks, publish, specs, write_config

#: A package name from upstream: shown as text everywhere, never markup.
EVIL = "x&amp;\"'><img src=x onerror=alert(28)>"
LINK = "https://mirror.example.org/stacks/{release}/{stack}"
TOKEN = "syt_bWlycm9yc3luYw_secret_token"
ROOM = "!spack:example.org"
CHATS: tuple[WebhookFormat, ...] = ("slack", "discord", "teams", "matrix", "ntfy", "cloudevents")


class Mailbox:
    """An SMTP server (aiosmtpd) on a loopback port, keeping what it accepts; it answers
    the scripted replies first (``"451 4.3.0 try later"``), then accepts."""

    def __init__(self, replies: Sequence[str] = ()) -> None:
        self.messages: list[Any] = []
        self.replies = list(replies)
        self.attempts = 0
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts += 1
        if self.replies:
            return self.replies.pop(0)
        self.messages.append(envelope)
        return "250 OK"

    def __enter__(self) -> Mailbox:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def evil_specs() -> list[dict[str, object]]:
    # A hash that sorts first, so the name is among the first 5 listed.
    return [spec_node(EVIL, "6.6.6", "a" * 32)]


def _hook(name: str, url: str, **keys: object) -> str:
    lines = [f"  - name: {name}", f"    url: {url}"]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in keys.items()]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def delivered(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """One stack synced twice (+20 -3 the second time) with a webhook of each format;
    what each receiver got."""
    tmp_path = tmp_path_factory.mktemp("notify")
    docroot = tmp_path / "www"
    docroot.mkdir()
    secret = new_secret()
    (tmp_path / "hook.secret").write_text(secret + "\n")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "hook.ed25519").write_bytes(pem)
    (tmp_path / "matrix.token").write_text(TOKEN + "\n")
    before = specs("a", 10)
    after = specs("a", 7) + specs("b", 19) + evil_specs()
    with (
        FixtureServer(docroot) as server,
        Receiver(secret) as signed,
        Receiver(None) as chat,
        Mailbox() as mailbox,
    ):
        publish(docroot, {"develop": {"e4s": before}})
        hooks = [
            _hook(
                "standard",
                signed.url,
                secret_file=str(tmp_path / "hook.secret"),
                ed25519_key_file=str(tmp_path / "hook.ed25519"),
            )
        ]
        for fmt in CHATS:
            keys: dict[str, object] = {"format": fmt, "link": LINK}
            if fmt == "matrix":
                keys |= {"room": ROOM, "token_file": str(tmp_path / "matrix.token")}
            hooks.append(_hook(fmt, f"{chat.url}/{fmt}", **keys))
        hooks.append(
            _hook(
                "email",
                f"smtp://127.0.0.1:{mailbox.port}",
                format="email",
                link=LINK,
                to=["ops@example.org", "spack@example.org"],
                **{"from": "mirrorsync@example.org"},
            )
        )
        path = write_config(tmp_path, server, hooks)
        config = load_config(str(path))
        first = sync(config)
        assert first.exit_code == 0, first.failures
        seen = len(chat.received), len(signed.received)
        assert len(mailbox.messages) == 1
        publish(docroot, {"develop": {"e4s": after}})
        second = run_cli("-c", str(path), "once", cwd=tmp_path)  # as a timer runs it
        assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr
        by_format: dict[str, Received] = {}
        for got in chat.received[seen[0] :]:
            fmt = next(f for f in CHATS if f"/hooks/mirrorsync/{f}" in got.path)
            assert fmt not in by_format, f"one batch per format, {fmt} got two"
            by_format[fmt] = got
        (standard,) = signed.received[seen[1] :]
        ping = anyio.run(lambda: manage.ping(config, "slack"))
        return {
            "first": chat.received[: seen[0]],
            "by_format": by_format,
            "standard": standard,
            "secret": secret,
            "public": private.public_key(),
            "ping": ping,
            "ping_body": chat.received[-1],
            "mail": mailbox.messages[1:],
            "config": path,
            "database": config.database_path,
        }


def only(delivered: dict[str, Any], fmt: str) -> Received:
    got: Received = delivered["by_format"][fmt]
    assert got.status == 200
    return got


# -- the summary: "develop/e4s: +20 -3, first 5 listed, link" ------------------------


def test_every_format_gets_one_batch_per_sync(delivered: dict[str, Any]) -> None:
    assert sorted(delivered["by_format"]) == sorted(CHATS)
    first = {next(f for f in CHATS if f"/{f}" in r.path) for r in delivered["first"]}
    assert first == set(CHATS)


def test_summary_names_stack_counts_first_five_and_link(delivered: dict[str, Any]) -> None:
    text = only(delivered, "ntfy").body.decode()
    assert text.startswith("- develop/e4s: +20 -3; added: ")
    assert "(first 5 listed)" in text
    assert "; link: https://mirror.example.org/stacks/develop/e4s" in text
    added = text.split("added: ", 1)[1].split(" (first", 1)[0].split(", ")
    assert len(added) == SAMPLE
    removed = text.split("removed: ", 1)[1].split(";", 1)[0].split(", ")
    assert sorted(removed) == ["zlib@1.7", "zlib@1.8", "zlib@1.9"]


# -- each service's documented fields ------------------------------------------------


def test_slack_incoming_webhook_text_and_blocks_escaped(delivered: dict[str, Any]) -> None:
    got = only(delivered, "slack")
    assert got.method == "POST" and got.content_type == "application/json"
    body = got.payload
    assert set(body) == {"text", "blocks"}
    assert isinstance(body["text"], str) and body["text"].strip()
    assert "develop/e4s" in body["text"] and "+20 -3" in body["text"]
    assert 1 <= len(body["blocks"]) <= 50
    for block in body["blocks"]:
        assert block["type"] == "section"
        assert block["text"]["type"] == "mrkdwn" and 0 < len(block["text"]["text"]) <= 3000
    everything = body["text"] + "".join(b["text"]["text"] for b in body["blocks"])
    # & < > escaped as Slack asks; the only < > left are Slack's own link syntax.
    assert slack_escape(EVIL) in body["text"]
    assert "<img" not in everything and '&amp;"' not in everything
    assert re.sub(r"<https://[^|<>]+\|link>", "", everything).count("<") == 0
    assert "<https://mirror.example.org/stacks/develop/e4s|link>" in body["text"]
    assert got.headers.get("webhook-signature") is None  # no secret: not signed


def test_discord_execute_webhook_within_limits(delivered: dict[str, Any]) -> None:
    got = only(delivered, "discord")
    assert got.content_type == "application/json"
    body = got.payload
    assert 0 < len(body["content"]) <= 2000
    assert body["allowed_mentions"] == {"parse": []}
    (embed,) = body["embeds"]
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    assert len(embed["title"]) + len(embed["description"]) <= 6000
    assert embed["url"] == "https://mirror.example.org/stacks/develop/e4s"
    dt.datetime.fromisoformat(embed["timestamp"].replace("Z", "+00:00"))
    assert "+20 -3" in body["content"] and "develop/e4s" in body["content"]
    assert markdown_escape(EVIL) in embed["description"]
    assert re.search(r"(?<!\\)[<>]", embed["description"]) is None  # no unescaped markup


def test_teams_workflows_message_with_adaptive_card(delivered: dict[str, Any]) -> None:
    got = only(delivered, "teams")
    body = got.payload
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert all(b["type"] == "TextBlock" and b["text"] and b["wrap"] for b in card["body"])
    assert "develop/e4s" in card["body"][0]["text"] and "+20 -3" in card["body"][0]["text"]
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open",
            "url": "https://mirror.example.org/stacks/develop/e4s",
        }
    ]
    text = "".join(b["text"] for b in card["body"])
    assert markdown_escape(EVIL) in text


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text += data


def test_matrix_client_server_send_m_room_message(delivered: dict[str, Any]) -> None:
    got = only(delivered, "matrix")
    # PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}, the batch's id as txnId.
    assert got.method == "PUT"
    room = "%21spack%3Aexample.org"
    assert got.path.endswith(
        f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{got.webhook_id}"
    )
    assert got.headers["authorization"] == f"Bearer {TOKEN}"
    body = got.payload
    assert body["msgtype"] == "m.text"
    assert body["format"] == "org.matrix.custom.html"
    assert "develop/e4s: +20 -3" in body["body"] and EVIL in body["body"]
    parsed = _Tags()
    parsed.feed(body["formatted_body"])
    assert parsed.tags <= {"p", "strong", "ul", "li", "a"}  # the name made no <img>
    assert EVIL in parsed.text  # shown exactly as written, as text


def test_ntfy_plain_publish_with_sanitised_headers(delivered: dict[str, Any]) -> None:
    got = only(delivered, "ntfy")
    assert got.content_type == "text/plain; charset=utf-8"
    assert got.headers["title"] == "mirrorsync: develop/e4s: +20 -3"
    assert got.headers["tags"] == "package"
    assert got.headers["click"] == "https://mirror.example.org/stacks/develop/e4s"
    assert len(got.body) <= 4096 and EVIL in got.body.decode()


def test_cloudevents_structured_mode(delivered: dict[str, Any]) -> None:
    got = only(delivered, "cloudevents")
    assert got.content_type == "application/cloudevents+json; charset=utf-8"
    event = got.payload
    assert event["specversion"] == "1.0"
    assert event["id"] == got.webhook_id and event["id"].startswith("msg_")
    assert event["source"] == "/mirrorsync/webhooks/cloudevents"
    assert event["type"] == "mirrorsync.events"
    assert event["datacontenttype"] == "application/json"
    assert event["subject"] == "develop/e4s"
    dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00"))  # RFC 3339
    events = event["data"]["events"]
    assert [e["type"] for e in events].count("spec.added") == 20
    assert [e["type"] for e in events].count("spec.removed") == 3
    assert event["data"]["summary"].startswith("mirrorsync: develop/e4s: +20 -3\n")


def test_chat_ping_is_a_test_message(delivered: dict[str, Any]) -> None:
    assert delivered["ping"].answer.acknowledged
    body = delivered["ping_body"].payload
    assert body["text"] == "mirrorsync: test message from webhook slack"


# -- v1a (ed25519) beside v1 (HMAC) ------------------------------------------------------


def test_standard_payload_signed_v1_and_v1a(delivered: dict[str, Any]) -> None:
    got: Received = delivered["standard"]
    assert got.acknowledged  # the README's receiver verified v1
    assert got.payload["type"] == "mirrorsync.events" and set(got.payload) == {
        "type",
        "timestamp",
        "data",
    }
    v1, v1a = got.headers["webhook-signature"].split(" ")
    assert v1.startswith("v1,") and v1a.startswith("v1a,")
    # v1a: ed25519 over "<webhook-id>.<webhook-timestamp>.<body>", as the spec says.
    public: Ed25519PublicKey = delivered["public"]
    signed = f"{got.webhook_id}.{got.timestamp}.".encode() + got.body
    public.verify(base64.b64decode(v1a.removeprefix("v1a,")), signed)  # raises if not
    # ... and with the README's receiver example.
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert readme_verify_v1a()(raw, got.headers, got.body)
    assert not readme_verify_v1a()(raw, got.headers, got.body + b" ")
    # v1 still verifies with the Standard Webhooks reference library.
    Webhook(delivered["secret"]).verify(got.body, got.headers)


def readme_verify_v1a() -> Callable[[bytes, dict[str, str], bytes], bool]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify_v1a(" in b)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    verify: Callable[[bytes, dict[str, str], bytes], bool] = namespace["verify_v1a"]
    return verify


def test_ed25519_key_forms(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = public_key_text(key)
    for text in (
        "whsk_" + base64.b64encode(seed).decode(),
        "whsk_" + base64.b64encode(seed + base64.b64decode(public[5:])).decode(),
    ):
        assert public_key_text(parse_ed25519_key(text)) == public
    for bad in ("whsec_" + base64.b64encode(seed).decode(), "whsk_AAAA", "whsk_" + "A" * 86 + "=="):
        with pytest.raises(ValueError, match="value not shown") as caught:
            parse_ed25519_key(bad)
        assert bad not in str(caught.value)


# -- configuration ----------------------------------------------------------------


def test_format_configuration_is_checked(tmp_path: Path) -> None:
    base = "  - name: h\n    url: https://example.org/h\n"

    def error(extra: str) -> str:
        with pytest.raises(ConfigError) as caught:
            parse_hooks(tmp_path, base + extra)
        return str(caught.value)

    for fmt in ("slack", "discord", "teams", "ntfy", "cloudevents"):  # no secret needed
        (hook,) = parse_hooks(tmp_path, base + f"    format: {fmt}\n").webhooks
        assert hook.format == fmt
    assert parse_hooks(tmp_path, base + "    ed25519_key_env: K\n").webhooks[0].format == "standard"
    assert error("    format: slak\n").endswith(
        "webhooks[0].format: invalid enum value 'slak' (expected one of: standard, slack, "
        "discord, teams, matrix, ntfy, cloudevents, email); did you mean 'slack'?"
    )
    assert "format: matrix needs the room ID" in error("    format: matrix\n    token_env: T\n")
    assert "format: matrix needs an access token" in error(
        f"    format: matrix\n    room: '{ROOM}'\n"
    )
    assert "room is for format: matrix only" in error(f"    format: slack\n    room: '{ROOM}'\n")
    assert "unknown placeholder {stak}" in error(
        "    format: slack\n    link: https://x.org/{stak}\n"
    )
    assert "did you mean 'stack'" in error("    format: slack\n    link: https://x.org/{stak}\n")
    assert "not both" in error("    format: ntfy\n    token_env: A\n    token_file: /b\n")


# -- bounded and escaped, whatever upstream sends ---------------------------------------


def _event(i: int, type_: str, release: str, stack: str | None, name: str | None) -> Event:
    return Event(
        i, type_, "src", release, stack, fake_hash(str(i)), name, "1.0", 1, "2026-12-06T00:00:00Z"
    )


def test_many_stacks_and_hostile_names_stay_bounded() -> None:
    events = [
        _event(i, "spec.added", "develop", f"stack-{i % 40}", "n\r\nfake line\u202e" + "y" * 500)
        for i in range(4000)
    ]
    summary = summarize(events, LINK)
    text = plain_text(summary)
    assert "and 30 more stacks or releases" in text
    assert "\u202e" not in text and "\r" not in text
    assert text.count("\n") + 1 == 1 + 10 + 1  # title, 10 stacks, and the count of the rest
    assert len(text) < 10_000
    assert header_value("a\r\nInjected: 1") == "a Injected: 1"
    encoded = header_value("développement ☃ " + "z" * 500)
    assert encoded.startswith("=?UTF-8?B?") and encoded.isascii() and "\n" not in encoded
    assert base64.b64decode(encoded[10:-2]).decode().endswith("…")


def test_separators_and_zero_width_characters_in_names_become_question_marks() -> None:
    hostile = "a\u2028fake line\u2029b\u200bc\ufeffd\u061ce\x85f"
    text = plain_text(summarize([_event(1, "spec.added", "develop", hostile, hostile)]))
    assert not any(ch in text for ch in "\u2028\u2029\u200b\ufeff\u061c\x85")
    assert "a?fake line?b?c?d?e?f" in text and text.count("\n") == 1


def test_ed25519_secret_is_never_in_an_error(tmp_path: Path) -> None:
    os.environ["MIRRORSYNC_TEST_ED25519"] = "whsk_not-base64-at-all"
    try:
        from mirrorsync.delivery.signing import load_credentials

        config = parse_hooks(
            tmp_path,
            "  - name: h\n    url: https://example.org/h\n    ed25519_key_env: MIRRORSYNC_TEST_ED25519\n",
        )
        with pytest.raises(ConfigError) as caught:
            load_credentials(config, config.webhooks[0])
        assert "webhooks[0].ed25519_key_env" in str(caught.value)
        assert "not-base64" not in str(caught.value)
    finally:
        del os.environ["MIRRORSYNC_TEST_ED25519"]


def test_config_check_needs_no_secret_for_a_chat_format(
    tmp_path: Path, server: FixtureServer
) -> None:
    hooks = [
        _hook("chat", "http://127.0.0.1:9/hook", format="slack"),
        _hook("room", "http://127.0.0.1:9", format="matrix", room=ROOM, token_env="NO_SUCH_TOKEN"),
    ]
    path = write_config(tmp_path, server, hooks)
    done = run_cli("-c", str(path), "config", "check", cwd=tmp_path)
    assert "Traceback" not in done.stderr
    assert "ok      webhook chat secret: none needed (format: slack)" in done.stdout
    assert "FAILED  webhook room secret: " in done.stdout
    assert "webhooks[1].token_env: environment variable NO_SUCH_TOKEN is not set" in done.stdout
    assert done.returncode == 2


# -- email (SMTP) ---------------------------------------------------------------------


def test_email_text_and_html_alternatives(delivered: dict[str, Any]) -> None:
    (envelope,) = delivered["mail"]
    assert envelope.mail_from == "mirrorsync@example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "spack@example.org"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Subject"] == "mirrorsync: develop/e4s: +20 -3"
    assert re.fullmatch(r"<msg_[0-9a-f]+@mirrorsync>", message["Message-ID"])
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None and page is not None
    assert "develop/e4s: +20 -3; added: " in text.get_content()
    assert EVIL in text.get_content()
    parsed = _Tags()
    parsed.feed(page.get_content())
    assert parsed.tags <= {"html", "body", "p", "strong", "ul", "li", "a"}
    assert EVIL in parsed.text


def _mail_hook(tmp_path: Path, port: int) -> Any:
    config = parse_hooks(
        tmp_path,
        f"  - name: m\n    format: email\n    url: smtp://127.0.0.1:{port}\n"
        "    to: [ops@example.org]\n    from: mirrorsync@example.org\n",
    )
    return config.webhooks[0]


def test_email_retries_a_4xx_reply_and_stops_at_5xx(tmp_path: Path) -> None:
    from mirrorsync.config import RetryConfig
    from mirrorsync.delivery.formats import render
    from mirrorsync.delivery.mail import send_mail
    from mirrorsync.delivery.signing import Credentials

    retries = RetryConfig(attempts=3, backoff_initial=0.01, backoff_max=0.02)
    events = [_event(1, "spec.added", "develop", "e4s", "zlib")]
    with Mailbox(["451 4.3.0 try later"]) as later:
        hook = _mail_hook(tmp_path, later.port)
        request = render(hook, "msg_1", "2026-12-06T00:00:00.000000Z", events)
        code, attempts, problem, _ = anyio.run(send_mail, hook, Credentials(), request, retries)
        assert (code, attempts, problem) == (250, 2, None) and len(later.messages) == 1
    with Mailbox(["550 5.1.1 no such user"] * 3) as refused:
        hook = _mail_hook(tmp_path, refused.port)
        code, attempts, problem, _ = anyio.run(send_mail, hook, Credentials(), request, retries)
        assert attempts == 1 and problem == "SMTP 550 5.1.1 no such user"
    code, attempts, problem, _ = anyio.run(send_mail, hook, Credentials(), request, retries)
    assert attempts == 3 and problem is not None  # the server is gone: refused, retried
    assert problem.startswith("connection failed") and problem.endswith("after 3 attempts")
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.from: format: email needs a sender"):
        parse_hooks(
            tmp_path, "  - name: m\n    format: email\n    url: smtp://h\n    to: [a@b.org]\n"
        )
    with pytest.raises(ConfigError, match=r"a password in the URL is refused") as caught:
        parse_hooks(
            tmp_path,
            "  - name: m\n    format: email\n    url: smtps://u:hunter2@h\n    to: [a@b.org]\n"
            "    from: m@b.org\n",
        )
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.url: format: email needs smtp://"):
        parse_hooks(
            tmp_path, "  - name: m\n    format: email\n    url: https://h\n    to: [a@b.org]\n"
        )


def test_a_chat_webhook_token_in_its_path_is_never_listed_or_stored(
    delivered: dict[str, Any], tmp_path: Path
) -> None:
    config = load_config(str(delivered["config"]))
    listed = {item.name: item.url for item in anyio.run(manage.list_webhooks, config)}
    assert listed["slack"].startswith("http://127.0.0.1:") and "/***" in listed["slack"]
    assert "/hooks/mirrorsync" not in listed["slack"] + listed["discord"] + listed["ntfy"]
    assert listed["matrix"].endswith("/hooks/mirrorsync/matrix")  # a homeserver: no secret
    stored = delivered["database"].read_bytes()
    wal = delivered["database"].with_name(delivered["database"].name + "-wal")
    stored += wal.read_bytes() if wal.exists() else b""
    assert b"/hooks/mirrorsync/slack" not in stored and b"/hooks/mirrorsync/matrix" in stored
    dumped = json.dumps(config_to_dict(config))
    assert "/hooks/mirrorsync/slack" not in dumped and "<redacted>" in dumped


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=120), st.text(min_size=1, max_size=40))
def test_any_name_stays_text_in_every_markup(name: str, stack: str) -> None:
    """Whatever upstream names a package or stack, Slack's text has no < > but its
    links, Matrix's HTML no tag but ours, and every body stays valid JSON."""
    from mirrorsync.config import WebhookConfig
    from mirrorsync.delivery.formats import render

    events = [_event(i, "spec.added", "develop", stack, name) for i in range(1, 8)]
    for fmt in CHATS:
        hook = WebhookConfig(
            name="h",
            url="https://x.org",
            format=fmt,
            link=LINK,
            room=ROOM if fmt == "matrix" else None,
        )
        request = render(hook, "msg_1", "2026-12-06T00:00:00.000000Z", events)
        if fmt == "ntfy":
            assert all(v.isascii() and v.isprintable() for v in request.headers.values())
            continue
        body = json.loads(request.body)
        if fmt == "slack":
            assert re.sub(r"<https://[^|<>]+\|link>", "", body["text"]).count("<") == 0
            assert ">" not in re.sub(r"<https://[^|<>]+\|link>", "", body["text"])
        elif fmt == "matrix":
            parsed = _Tags()
            parsed.feed(body["formatted_body"])
            assert parsed.tags <= {"p", "strong", "ul", "li", "a"}
        elif fmt == "discord":
            assert len(body["content"]) <= 2000 and len(body["embeds"][0]["title"]) <= 256
