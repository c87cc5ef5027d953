"""Webhook triggers over real HTTP: a signed delivery makes one ticket; a retried delivery
with the same id makes none; a bad signature, a missing id or a trigger with no secret on
this host is refused. Signatures are the Standard Webhooks scheme's by default (the id and
time signed with the body: no replay under another id, none after 5 minutes), or the
body's alone (`signature = "body"`)."""

from __future__ import annotations

import base64
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import Target
from tests.support.api import Api, start_api
from tests.support.cli import sqlite_shell, swarm, swarm_inproc

from swarm_engine.service.triggers import sign, sign_standard

SECRET = "a-webhook-secret-of-some-length"


@pytest.fixture
def api(store_target: Target, tmp_path: Path) -> Iterator[Api]:
    home = tmp_path / "home"
    assert swarm_inproc(home, "status", "--init", **store_target.env).returncode == 0
    folder = tmp_path / "hooked"
    folder.mkdir()
    (folder / "workflow.yaml").write_text(textwrap.dedent("""\
        name: hooked
        steps:
          - id: hello
            agent: echo
            inputs: {said: "${inputs.webhook.ref}"}
        triggers:
          - name: on-push
            webhook: true
            inputs: {source: "ci"}
          - name: unsecret
            webhook: true
          - name: legacy
            webhook: true
        """))  # fmt: skip
    done = swarm_inproc(home, "workflow", "register", str(folder), **store_target.env)
    assert done.returncode == 0, done.stderr
    hooks = {"on-push": {"secret": SECRET},
             "legacy": {"secret": SECRET, "signature": "body"}}  # fmt: skip
    server = start_api(home, SWARM_TRIGGERS=json.dumps(hooks), **store_target.env)
    yield server
    server.stop()


def deliver(
    api: Api, name: str, body: bytes, key: str | None, secret: str = SECRET, sent: int | None = None
) -> object:
    """A delivery signed as a Standard Webhooks sender signs it, `key` its id (None: no
    `webhook-id` header), sent at `sent` (Unix seconds; now by default)."""
    headers = sign_standard(secret, key or "", int(time.time()) if sent is None else sent, body)
    if key is None:
        del headers["webhook-id"]
    return post(api, name, body, headers)


def deliver_body_signed(api: Api, name: str, body: bytes, key: str | None) -> object:
    """A delivery signed the older way: `X-Swarm-Signature` over the body alone."""
    headers = {"X-Swarm-Signature": sign(SECRET, body)}
    if key is not None:
        headers["Idempotency-Key"] = key
    return post(api, name, body, headers)


def post(api: Api, name: str, body: bytes, headers: dict[str, str]) -> object:
    headers = {**headers, "Content-Type": "application/json"}
    return api.post(f"/v1/triggers/{name}", data=body, headers=headers, token=None)


def test_a_delivery_makes_one_ticket_and_a_retry_makes_none(api: Api, store_target: Target) -> None:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    first = deliver(api, "on-push", body, "delivery-1")
    assert first.status_code == 201, first.text  # type: ignore[attr-defined]
    again = deliver(api, "on-push", body, "delivery-1")
    assert again.status_code == 200 and again.json() == {**first.json(), "created": False}  # type: ignore[attr-defined]
    other = deliver(api, "on-push", body, "delivery-2")
    assert other.status_code == 201  # type: ignore[attr-defined]
    tickets = store_target.rows("SELECT id, workflow_id, inputs FROM tickets ORDER BY id")
    assert [t["id"] for t in tickets] == [first.json()["ticket_id"], other.json()["ticket_id"]]  # type: ignore[attr-defined]
    inputs = tickets[0]["inputs"]
    inputs = json.loads(inputs) if isinstance(inputs, str) else inputs
    assert inputs == {"source": "ci", "webhook": {"ref": "refs/heads/main"}}
    assert {t["workflow_id"] for t in tickets} == {"hooked@1.0.0"}


@pytest.mark.parametrize(
    ("name", "secret", "key", "status", "says"),
    [
        ("on-push", "not-the-secret-at-all-0000", "k", 401, "does not match"),
        ("on-push", SECRET, None, 401, "a delivery needs the webhook-id header"),
        ("unsecret", SECRET, "k", 403, "no secret configured"),
        ("nope", SECRET, "k", 404, "no webhook trigger named 'nope'"),
    ],
)
def test_bad_deliveries_are_refused_and_make_nothing(
    api: Api, store_target: Target, name: str, secret: str, key: str | None, status: int,
    says: str,
) -> None:  # fmt: skip
    refused = deliver(api, name, b'{"ref": "x"}', key, secret)
    assert refused.status_code == status, refused.text  # type: ignore[attr-defined]
    assert says in refused.json()["message"]  # type: ignore[attr-defined]
    assert store_target.rows("SELECT id FROM tickets") == []


def test_a_body_the_api_would_refuse_is_refused(api: Api, store_target: Target) -> None:
    refused = deliver(api, "on-push", b'{"a": "x\\u0000y"}', "k")
    assert refused.status_code == 400 and "NUL" in refused.json()["message"]  # type: ignore[attr-defined]
    assert store_target.rows("SELECT id FROM tickets") == []


def test_a_body_that_is_not_json_is_refused(api: Api, store_target: Target) -> None:
    refused = deliver(api, "on-push", b"\xff not json", "k")
    assert refused.status_code == 400 and "not JSON" in refused.json()["message"]  # type: ignore[attr-defined]
    assert store_target.rows("SELECT id FROM tickets") == []


@pytest.mark.parametrize(
    ("body", "says"),
    [(b'{"a": 1, "a": 2}', 'the body: duplicate key "a"'),
     (b'{"x": [{"b": 1, "b": 1}]}', 'the body: duplicate key "b"'),
     (b"", "the body is not JSON: it is empty"), (b" \n\t", "the body is not JSON: it is empty")],
)  # fmt: skip
def test_a_body_is_read_as_every_json_body_of_the_api(
    api: Api, store_target: Target, body: bytes, says: str
) -> None:
    """A key given twice is refused, never read as its last value; an empty body is not
    JSON (never `"webhook": null`)."""
    refused = deliver(api, "on-push", body, "k")
    assert refused.status_code == 400, refused.text  # type: ignore[attr-defined]
    assert refused.json()["message"] == says  # type: ignore[attr-defined]
    assert store_target.rows("SELECT id FROM tickets") == []


def test_serve_refuses_a_secret_env_that_breaks_the_rule_of_a_secret(tmp_path: Path) -> None:
    """`secret_env` naming a variable that holds 1 character or only spaces: `serve` does
    not start (one line, exit 5), as for such an inline `secret`."""
    home = tmp_path / "home"
    hooks = json.dumps({"hk": {"secret_env": "HK_SECRET"}})
    for value, says in (("x", "$HK_SECRET holds 1 character"), (" ", "$HK_SECRET is blank")):
        done = swarm(home, "serve", "--port", "0", SWARM_TRIGGERS=hooks, HK_SECRET=value)
        assert done.returncode == 5, done.stderr
        assert done.stderr.startswith(f"error: setting triggers.hk.secret_env: {says}")
        assert len(done.stderr.splitlines()) == 1, done.stderr


def test_a_webhook_name_another_row_declares_too_fires_for_none(
    api: Api, store_target: Target, tmp_path: Path
) -> None:
    """A registry row written by another client declares `on-push` too (registration
    refuses that; a row is untrusted): a delivery signed with the trigger's secret makes
    no ticket of either workflow, and says why (409, one line), never the first read."""
    spec = json.dumps({
        "name": "evil", "version": "1.0.0", "steps": [{"id": "a", "agent": "echo"}],
        "triggers": [{"name": "on-push", "webhook": True, "inputs": {"stolen": True}}],
    })  # fmt: skip
    statement = f"INSERT INTO workflows (name, version, spec) VALUES ('evil', '1.0.0', '{spec}')"
    if store_target.dialect == "sqlite":
        sqlite_shell(tmp_path / "home" / "registry.db", statement)
    else:
        store_target.sql(statement)
    refused = deliver(api, "on-push", b'{"ref": "x"}', "k")
    assert refused.status_code == 409, refused.text  # type: ignore[attr-defined]
    assert refused.json()["message"] == (  # type: ignore[attr-defined]
        "trigger 'on-push' is declared by more than one workflow (evil, hooked): it fires for"
        " none of them until only one declares it"
    )
    assert store_target.rows("SELECT id FROM tickets") == []
    unsigned = deliver(api, "on-push", b'{"ref": "x"}', "k", secret="not-the-secret-at-all-0000")
    assert unsigned.status_code == 401  # type: ignore[attr-defined]  (names no workflow)


def test_a_webhook_of_a_row_that_fails_validation_is_not_found(
    api: Api, store_target: Target, tmp_path: Path
) -> None:
    """Rows another client wrote that decode but fail `workflow show`'s checks (a trigger
    both cron and webhook; a dependency cycle) have no webhook: a delivery signed with the
    secret this host holds for the name gets 404 and makes no ticket, as for a row that
    does not decode, while a valid workflow's webhook beside them still delivers."""
    rows = {
        "both": ([{"id": "a", "agent": "echo"}],
                 {"name": "both-ways", "cron": "* * * * * */10", "webhook": True}),
        "looped": ([{"id": "a", "agent": "echo", "needs": ["b"]},
                    {"id": "b", "agent": "echo", "needs": ["a"]}],
                   {"name": "looped-hook", "webhook": True}),
    }  # fmt: skip
    home = tmp_path / "home"
    for name, (steps, trigger) in rows.items():
        spec = json.dumps({"name": name, "version": "1.0.0", "steps": steps, "triggers": [trigger]})
        statement = (
            f"INSERT INTO workflows (name, version, spec) VALUES ('{name}', '1.0.0', '{spec}')"
        )
        if store_target.dialect == "sqlite":
            sqlite_shell(home / "registry.db", statement)
        else:
            store_target.sql(statement)
    secrets = {name: {"secret": SECRET} for name in ("both-ways", "looped-hook", "on-push")}
    server = start_api(home, SWARM_TRIGGERS=json.dumps(secrets), **store_target.env)
    try:
        for trigger in ("both-ways", "looped-hook"):
            refused = deliver(server, trigger, b'{"ref": "x"}', "k")
            assert refused.status_code == 404, refused.text  # type: ignore[attr-defined]
            assert refused.json()["message"] == f"no webhook trigger named '{trigger}'"  # type: ignore[attr-defined]
        assert store_target.rows("SELECT id FROM tickets") == []
        made = deliver(server, "on-push", b'{"ref": "x"}', "k")
        assert made.status_code == 201, made.text  # type: ignore[attr-defined]
    finally:
        server.stop()


def test_a_body_with_a_too_long_integer_is_the_422_every_route_answers(
    api: Api, store_target: Target
) -> None:
    # An integer of 4301 digits: Python will not read it; the answer is the API's own 422
    # (as `POST /v1/tickets` gives), not a 400 with Python's advice to raise the limit.
    body = b'{"a": ' + b"9" * 4301 + b"}"
    got = deliver(api, "on-push", body, "long-number")
    assert got.status_code == 422, got.text  # type: ignore[attr-defined]
    assert got.json() == {  # type: ignore[attr-defined]
        "error": "invalid_request",
        "message": "body: a number of more than 4300 digits",
    }
    same = api.post("/v1/tickets", data=b'{"workflow_id": "hooked", "inputs": {"a": '
                    + b"9" * 4301 + b"}}", headers={"Content-Type": "application/json"})  # fmt: skip
    assert same.status_code == 422 and same.json() == got.json()  # type: ignore[attr-defined]
    assert store_target.rows("SELECT id FROM tickets") == []
    unsigned = deliver(api, "on-push", body, "long-number", secret="not-the-secret-at-all-0000")
    assert unsigned.status_code == 401  # type: ignore[attr-defined]  # the signature first


def test_a_seen_delivery_sent_again_under_another_id_or_later_is_refused(
    api: Api, store_target: Target
) -> None:
    """Whoever saw one signed delivery (a proxy's log) cannot make a ticket with it: its
    id is signed with its body (another id: 401), its time too (5 minutes on: 401); the
    same id again is a retry (200, no second ticket)."""
    body = b'{"ref": "refs/heads/main"}'
    now = int(time.time())
    seen = sign_standard(SECRET, "delivery-1", now, body)
    assert post(api, "on-push", body, seen).status_code == 201  # type: ignore[attr-defined]
    assert post(api, "on-push", body, seen).status_code == 200  # type: ignore[attr-defined]
    replayed = post(api, "on-push", body, {**seen, "webhook-id": "delivery-2"})
    assert replayed.status_code == 401  # type: ignore[attr-defined]
    assert replayed.json()["message"] == (  # type: ignore[attr-defined]
        "the webhook-signature header does not match the webhook-id, webhook-timestamp and body"
    )
    for sent in (now - 6 * 60, now + 6 * 60):  # (a clock up to 5 minutes off is taken)
        late = deliver(api, "on-push", body, f"late-{sent}", sent=sent)
        assert late.status_code == 401, late.text  # type: ignore[attr-defined]
        assert "more than 5 minutes from this host's clock" in late.json()["message"]  # type: ignore[attr-defined]
    bad_time = post(api, "on-push", body, {**seen, "webhook-timestamp": "yesterday"})
    assert bad_time.status_code == 401  # type: ignore[attr-defined]
    assert bad_time.json()["message"] == "the webhook-timestamp is not a time in Unix seconds"  # type: ignore[attr-defined]
    assert len(store_target.rows("SELECT id FROM tickets")) == 1


def test_a_trigger_set_to_body_signatures_takes_those_and_no_others(
    api: Api, store_target: Target
) -> None:
    body = b'{"ref": "x"}'
    made = deliver_body_signed(api, "legacy", body, "k1")
    assert made.status_code == 201, made.text  # type: ignore[attr-defined]
    again = deliver_body_signed(api, "legacy", body, "k1")
    assert again.status_code == 200 and again.json()["created"] is False  # type: ignore[attr-defined]
    keyless = deliver_body_signed(api, "legacy", body, None)
    assert keyless.status_code == 400 and "Idempotency-Key" in keyless.json()["message"]  # type: ignore[attr-defined]
    standard = deliver(api, "legacy", body, "k2")
    assert standard.status_code == 401  # type: ignore[attr-defined]
    assert standard.json()["message"] == "a delivery needs the X-Swarm-Signature header"  # type: ignore[attr-defined]
    forged = post(api, "legacy", body, {"X-Swarm-Signature": "sha256=00", "Idempotency-Key": "k"})
    assert forged.status_code == 401  # type: ignore[attr-defined]
    assert "X-Swarm-Signature header does not match" in forged.json()["message"]  # type: ignore[attr-defined]
    # and a trigger of Standard Webhooks signatures says what it takes
    old_way = deliver_body_signed(api, "on-push", body, "k3")
    assert old_way.status_code == 401  # type: ignore[attr-defined]
    assert old_way.json()["message"] == (  # type: ignore[attr-defined]
        "a delivery needs the webhook-id, webhook-timestamp, webhook-signature headers (this"
        " trigger takes Standard Webhooks signatures, not X-Swarm-Signature:"
        ' signature = "body" in [triggers.on-push] takes that)'
    )
    assert len(store_target.rows("SELECT id FROM tickets")) == 1


def test_a_whsec_secret_is_the_key_it_encodes(tmp_path: Path) -> None:
    """A secret written as Standard Webhooks senders give it (`whsec_` and base64): the
    signature is made with the bytes it encodes, as by any sender of the scheme."""
    from standardwebhooks import Webhook

    home = tmp_path / "home"
    folder = tmp_path / "hooked"
    folder.mkdir()
    (folder / "workflow.yaml").write_text(
        "name: hooked\nsteps:\n  - {id: a, agent: echo}\n"
        "triggers:\n  - {name: on-push, webhook: true}\n"
    )
    assert swarm_inproc(home, "workflow", "register", str(folder)).returncode == 0
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    server = start_api(home, SWARM_TRIGGERS=json.dumps({"on-push": {"secret": secret}}))
    try:
        body = b'{"ref": "x"}'
        now = int(time.time())
        from datetime import UTC, datetime

        signature = Webhook(key).sign("d-1", datetime.fromtimestamp(now, tz=UTC), body)
        headers = {"webhook-id": "d-1", "webhook-timestamp": str(now),
                   "webhook-signature": signature}  # fmt: skip
        made = post(server, "on-push", body, headers)
        assert made.status_code == 201, made.text  # type: ignore[attr-defined]
    finally:
        server.stop()


@pytest.mark.parametrize("delivery_id", ["d\u00e9", "x" * 201, "tab\there"])
def test_an_id_a_sender_cannot_sign_as_written_is_refused(
    api: Api, store_target: Target, delivery_id: str
) -> None:
    """A header is read as Latin-1, so only an ASCII id is signed as its sender wrote it
    (tester h-201: `d\u00e9` signed as UTF-8 got 401, signed as mojibake 201); ids past 200
    characters or not printable get the same one line (400), never a framework's 422."""
    body = b'{"ref": "x"}'
    headers = sign_standard(SECRET, delivery_id, int(time.time()), body)
    headers["webhook-id"] = delivery_id.encode().decode("latin-1")  # (as it goes on the wire)
    refused = post(api, "on-push", body, headers)
    assert refused.status_code == 400, refused.text  # type: ignore[attr-defined]
    assert refused.json()["message"] == "the webhook-id is at most 200 printable ASCII characters"  # type: ignore[attr-defined]
    assert store_target.rows("SELECT id FROM tickets") == []


@pytest.mark.parametrize("secret", ["whsec_!!!notbase64!!!!", "whsec_abcdefghijklmnopq="])
def test_serve_refuses_a_whsec_secret_that_is_not_base64(tmp_path: Path, secret: str) -> None:
    """Inline or from a variable: one line, exit 5, `serve` not started (tester h-201: it
    started, and every delivery was a 500 with a traceback)."""
    home = tmp_path / "home"
    for hooks, env in (({"hk": {"secret": secret}}, {}),
                       ({"hk": {"secret_env": "HK_SECRET"}}, {"HK_SECRET": secret})):  # fmt: skip
        done = swarm(home, "serve", "--port", "0", SWARM_TRIGGERS=json.dumps(hooks), **env)
        assert done.returncode == 5, done.stderr
        assert "starts with whsec_ but what follows is not the base64 of a key" in done.stderr
        assert len(done.stderr.splitlines()) == 1 and secret not in done.stderr, done.stderr
