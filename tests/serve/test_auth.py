"""With a key set, every route but /health answers 401 to anything but the exact key."""

from __future__ import annotations

import base64

import httpx2 as httpx
import pytest
from starlette.routing import Mount

from .conftest import MODEL

openai = pytest.importorskip("openai")

KEY = "zk-9f8e7d6c5b4a3210"
BAD_KEYS = {
    "missing": None,
    "wrong": "nope",
    "prefix": KEY[:-1],
    "suffix": KEY[1:],
    "same length, wrong": KEY[:-1] + ("0" if KEY[-1] != "0" else "1"),
    "key plus more": KEY + "x",
    "empty": "Bearer",  # sent as the whole header value
}


@pytest.fixture(scope="module")
def keyed(tiny_chat):
    import zenlm
    from zenlm.serve import ServeOptions, create_app

    from .conftest import LiveServer

    lm = zenlm.load(tiny_chat, quantize=None)
    app = create_app(lambda: lm, ServeOptions(model_name=MODEL, api_key=KEY))
    server = LiveServer(app).start()
    yield server
    server.stop()


def route_table(app) -> list[tuple[str, str]]:
    """(method, concrete path) of every route and mount the app has."""
    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            out.append(("GET", route.path + "/app.js"))
            continue
        path = route.path.replace("{name:path}", MODEL)
        out.extend((method, path) for method in sorted(route.methods - {"HEAD"}))
    return out


def test_every_route_but_health_needs_the_key(keyed):
    routes = route_table(keyed.app)
    assert len(routes) >= 9 and ("GET", "/health") in routes
    for method, path in routes:
        for label, key in BAD_KEYS.items():
            headers = {} if key is None else {
                "Authorization": key if label == "empty" else f"Bearer {key}"}
            response = httpx.request(method, keyed.url + path, headers=headers, content=b"{}")
            if path == "/health":
                assert response.status_code == 200
                continue
            assert response.status_code == 401, (method, path, label)
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key" and KEY not in response.text
        good = httpx.request(method, keyed.url + path, content=b"{}",
                             headers={"Authorization": f"Bearer {KEY}"})
        assert good.status_code in (200, 400), (method, path, good.text)


def test_other_schemes_and_basic_for_browsers(keyed):
    for header in (f"Token {KEY}", KEY, f"Basic {KEY}",
                   "Basic " + base64.b64encode(b"user:nope").decode()):
        assert httpx.get(keyed.url + "/v1/models", headers={"Authorization": header}
                         ).status_code == 401
    page = httpx.get(keyed.url + "/")
    assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic")
    basic = "Basic " + base64.b64encode(f"playground:{KEY}".encode()).decode()
    page = httpx.get(keyed.url + "/", headers={"Authorization": basic})
    assert page.status_code == 200 and "zenlm" in page.text


def test_openai_client_authentication_error(keyed):
    bad = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY[:-1], max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    good = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0)
    reply = good.chat.completions.create(model=MODEL, max_tokens=3,
                                         messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content is not None


def test_unauthenticated_huge_body_is_refused_before_reading(keyed):
    response = httpx.post(keyed.url + "/v1/completions", content=b"x" * (5 * 2**20))
    assert response.status_code == 401
