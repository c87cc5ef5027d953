"""The dashboard refuses bad input as the API does, with a 422 naming it in one line
(`api/dashboard.py`): a create form giving a field twice (`title=a&title=b`: the first
was taken) or without a required one (no `title`: a ticket titled "" was made), and a
ticket list filter that is none (`/ui?status=bogus`, `/ui/tickets/rows?status=zzz`,
`?agent=echo@`: the filter was dropped and every ticket listed, a 200). A real server on
a SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from tests.support.api import Api, start_api
from tests.support.cli import swarm_inproc

FORM = {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true"}
REPEATED = "given 2 times; it takes one value"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("dash") / "home"
    assert swarm_inproc(home, "status", "--init").returncode == 0
    server = start_api(home)
    yield server
    server.stop()


def refused(answer: requests.Response, message: str) -> dict[str, Any]:
    """The 422 body of `answer`, its message `message`."""
    assert answer.status_code == 422, answer.text[:300]
    body = answer.json()
    assert body["error"] == "invalid_request" and body["message"] == message, body
    return dict(body)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ("title=a&title=b&target=agent+echo", f"form.title: {REPEATED}"),
        ("title=b&target=agent+echo&title=a", f"form.title: {REPEATED}"),
        ("title=a&target=agent+echo&target=agent+nope", f"form.target: {REPEATED}"),
        ("title=a&target=agent+echo&inputs=%7B%7D&inputs=%7B%7D", f"form.inputs: {REPEATED}"),
        ("target=agent+echo", "form.title: Field required"),
        ("title=a", "form.target: Field required"),
        ("", "form.title: Field required (and 1 more)"),
        ("title=a&title=b", f"form.title: {REPEATED} (and 1 more)"),
    ],
)
def test_a_create_form_with_a_field_twice_or_missing_is_a_422(
    api: Api, form: str, message: str
) -> None:
    answer = api.post("/ui/tickets/create", data=form, headers=FORM)
    body = refused(answer, message)
    assert all(d["loc"][0] == "form" for d in body["details"]), body
    assert api.get("/v1/tickets").json()["items"] == []  # nothing made


def test_the_form_as_the_page_sends_it_still_creates(api: Api) -> None:
    for form in ("title=a&target=agent+echo&inputs=", "title=b&target=agent+echo"):
        answer = api.post("/ui/tickets/create", data=form, headers=FORM)
        assert answer.status_code == 200 and "created" in answer.text, answer.text
    answer = api.post("/ui/tickets/create", data="title=c&target=", headers=FORM)
    assert answer.status_code == 200 and "not created: " in answer.text, answer.text
    assert sorted(t["title"] for t in api.get("/v1/tickets").json()["items"]) == ["a", "b"]


@pytest.mark.parametrize("path", ["/ui", "/ui/tickets/rows"])
def test_a_filter_that_is_none_is_a_422_not_every_ticket(api: Api, path: str) -> None:
    hx = {"HX-Request": "true"}
    for query, where in (
        ({"status": "bogus"}, "query.status.0"),
        ({"status": ["open", "zzz"]}, "query.status.1"),
        ({"agent": "echo@"}, "query.agent"),
        ({"workflow": "hook@"}, "query.workflow"),
    ):
        answer = api.get(path, params=query, headers=hx)
        assert answer.status_code == 422, (query, answer.text[:300])
        assert answer.json()["message"].startswith(f"{where}: "), answer.text
        api_answer = api.get("/v1/tickets", params=query)  # the API's own words
        assert answer.json()["message"] == api_answer.json()["message"], api_answer.text
    good = api.get(path, params={"status": ["open", "done"], "agent": "", "workflow": ""})
    assert good.status_code == 200, good.text[:300]
