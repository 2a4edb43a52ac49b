"""The dashboard's security through a real server on loopback: the token on every page
and API call, the login cookie, CSRF, no open redirect, security headers, escaping of
user-supplied ids, not-found pages.

Every request goes out on its own (``httpx.request``): no cookie jar carries anything
from one request to the next unless the test says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from shelfrank.client import Client, Event, EventType, Item
from shelfrank.server.app import RunningServer, ServerOptions, start
from shelfrank.server.dashboard.context import STATIC_DIR
from shelfrank.server.dashboard.pages import assemble_pages
from shelfrank.server.dashboard.sessions import SESSION_SECONDS, Sessions, safe_next
from tests.conftest import SERVER_CONFIG

TOKEN = "open-sesame-1234"
OTHER_TOKEN = "the-analysts-token"
SCRIPT = "<script>alert(1)</script>"
CSRF = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def server(
    toy_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = start(
        ServerOptions(
            state_dir=tmp_path_factory.mktemp("dashboard-security") / "state",
            port=0,
            model_dir=toy_model_dir,
            train_config=SERVER_CONFIG,
            token=TOKEN,
            callers={"analyst": OTHER_TOKEN},
            http_port=0,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def open_server(
    toy_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """No token configured: the dashboard is open, POSTs still need the CSRF check."""
    running = start(
        ServerOptions(
            state_dir=tmp_path_factory.mktemp("dashboard-open") / "state",
            port=0,
            model_dir=toy_model_dir,
            train_config=SERVER_CONFIG,
            http_port=0,
        )
    )
    yield running
    running.stop()


def call(
    server: RunningServer,
    method: str,
    path: str,
    *,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    sent: dict[str, str | bytes] = dict(headers or {})
    if cookies:  # bytes: latin-1 as HTTP reads them ("\u00b2" arrives as '²'), else UTF-8
        cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
        try:
            sent["Cookie"] = cookie.encode("latin-1")
        except UnicodeEncodeError:
            sent["Cookie"] = cookie.encode("utf-8")
    return httpx.request(
        method,
        f"http://127.0.0.1:{server.http_port}{path}",
        headers=sent,
        follow_redirects=False,
        timeout=30,
        **kwargs,
    )


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def set_cookies(response: httpx.Response) -> dict[str, Any]:
    """Each cookie the response sets, as parsed morsels (their attributes too)."""
    found: dict[str, Any] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        found.update(cookie)
    return found


def session_of(server: RunningServer, token: str = TOKEN) -> str:
    """A session cookie got by logging in as a browser does."""
    response = call(
        server,
        "POST",
        "/login",
        cookies={"shelfrank_csrf": CSRF},
        data={"token": token, "csrf": CSRF, "next": "/"},
    )
    assert response.status_code == 303, response.text
    return str(set_cookies(response)["shelfrank_session"].value)


PAGES = assemble_pages(STATIC_DIR)


def page_bytes(name: str) -> bytes:
    return PAGES[name]


@pytest.mark.parametrize("path", ["/", "/users", "/users/u0", "/items/shoe1", "/experiments"])
def test_pages_without_a_token_go_to_the_login_page(server: RunningServer, path: str) -> None:
    response = call(server, "GET", path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={quote(path, safe='')}"


@pytest.mark.parametrize(
    "path", ["/api/overview", "/api/users/u0", "/api/items/shoe1", "/api/openapi.json"]
)
def test_api_calls_without_a_token_are_401(server: RunningServer, path: str) -> None:
    response = call(server, "GET", path)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert call(server, "GET", path, headers=bearer("wrong")).status_code == 401


def test_bearer_tokens_of_every_caller_work(server: RunningServer) -> None:
    for token in (TOKEN, OTHER_TOKEN):
        assert call(server, "GET", "/api/overview", headers=bearer(token)).status_code == 200
        assert call(server, "GET", "/", headers=bearer(token)).status_code == 200


def test_health_login_and_static_files_need_no_token(server: RunningServer) -> None:
    assert call(server, "GET", "/healthz").status_code == 200
    login = call(server, "GET", "/login")
    assert login.status_code == 200
    assert login.content == page_bytes("login")
    assert call(server, "GET", "/static/app.js").status_code == 200


@pytest.mark.parametrize(
    "path", ["/static/layout.html", "/static/pages/user.html", "/static/pages/", "/static/pages"]
)
def test_the_layout_and_fragments_are_no_pages(server: RunningServer, path: str) -> None:
    """The pages are put together from them and served whole at their own paths only."""
    response = call(server, "GET", path)
    assert (response.status_code, response.content) == (404, page_bytes("not-found"))


def test_login_sets_an_httponly_strict_session_cookie_without_the_token(
    server: RunningServer,
) -> None:
    form = call(server, "GET", "/login")
    csrf = set_cookies(form)["shelfrank_csrf"]
    assert len(csrf.value) == 32
    assert not csrf["httponly"]  # the page's script sends it back
    assert csrf["samesite"] == "strict"
    assert csrf["path"] == "/"

    response = call(
        server,
        "POST",
        "/login",
        cookies={"shelfrank_csrf": csrf.value},
        data={"token": TOKEN, "csrf": csrf.value, "next": "/items/shoe1"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/items/shoe1"
    session = set_cookies(response)["shelfrank_session"]
    assert session["httponly"]
    assert session["samesite"] == "strict"
    assert session["path"] == "/"
    assert session["max-age"] == str(SESSION_SECONDS)
    assert TOKEN not in session.value
    caller, expiry, mac = session.value.rsplit(".", 2)
    assert caller == "default"
    assert int(expiry) > time.time() * 1000
    assert len(mac) == 64

    cookies = {"shelfrank_session": session.value}
    assert call(server, "GET", "/api/overview", cookies=cookies).status_code == 200
    assert call(server, "GET", "/users/u0", cookies=cookies).status_code == 200
    # Another caller's login names that caller.
    assert session_of(server, OTHER_TOKEN).startswith("analyst.")


def test_a_session_cookie_is_valid_on_another_replica_sharing_the_token(
    server: RunningServer,
) -> None:
    made_elsewhere = Sessions({"default": TOKEN}).cookie_for("default", int(time.time() * 1000))
    cookies = {"shelfrank_session": made_elsewhere}
    assert call(server, "GET", "/api/overview", cookies=cookies).status_code == 200


def test_forged_or_expired_cookies_are_refused(server: RunningServer) -> None:
    good = session_of(server)
    caller, expiry, mac = good.rsplit(".", 2)
    now = int(time.time() * 1000)
    forged = [
        f"{caller}.{expiry}.{'0' * 64}",  # wrong MAC
        f"{caller}.{int(expiry) + 1000}.{mac}",  # extended
        f"analyst.{expiry}.{mac}",  # another caller's name
        Sessions({"default": "not-the-token"}).cookie_for("default", now),
        Sessions({"default": TOKEN}).cookie_for("default", now - SESSION_SECONDS * 1000 - 1),
        Sessions({"stranger": "x"}).cookie_for("stranger", now),
        f"{caller}.\u00b2.{mac}",  # '²': a digit to str.isdigit(), not to int()
        "default.\u00b2.x",
        f"{caller}.\u0663.{mac}",  # an Arabic-Indic 3
        f"{caller}.{expiry}0.{mac}",  # 17 digits
        "garbage",
        "",
    ]
    for cookie in forged:
        assert Sessions({"default": TOKEN}).caller_of(cookie, now) is None, cookie
        cookies = {"shelfrank_session": cookie}
        response = call(server, "GET", "/api/overview", cookies=cookies)
        assert response.status_code == 401, cookie
        assert call(server, "GET", "/", cookies=cookies).status_code == 303, cookie
    # A wrong bearer header is refused even next to a good cookie.
    response = call(
        server,
        "GET",
        "/api/overview",
        cookies={"shelfrank_session": good},
        headers=bearer("wrong"),
    )
    assert response.status_code == 401


def test_cookie_posts_need_the_csrf_header(server: RunningServer) -> None:
    session = session_of(server)
    cookies = {"shelfrank_session": session, "shelfrank_csrf": CSRF}
    path = "/api/items/book2/availability"
    for headers in ({}, {"X-CSRF-Token": "f" * 32}, {"X-CSRF-Token": ""}):
        response = call(
            server, "POST", path, cookies=cookies, headers=headers, json={"available": True}
        )
        assert response.status_code == 403, headers
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    # The header without the cookie (another site cannot read or set it) is no better.
    response = call(
        server,
        "POST",
        path,
        cookies={"shelfrank_session": session},
        headers={"X-CSRF-Token": CSRF},
        json={"available": True},
    )
    assert response.status_code == 403
    response = call(
        server,
        "POST",
        path,
        cookies=cookies,
        headers={"X-CSRF-Token": CSRF},
        json={"available": True},
    )
    assert response.status_code == 200
    # A script with the bearer token needs no CSRF token.
    response = call(server, "POST", path, headers=bearer(), json={"available": True})
    assert response.status_code == 200


def test_login_with_a_wrong_token_is_a_401_page_and_sets_no_cookie(server: RunningServer) -> None:
    response = call(
        server,
        "POST",
        "/login",
        cookies={"shelfrank_csrf": CSRF},
        data={"token": "wrong", "csrf": CSRF, "next": "/"},
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert response.content == page_bytes("login")
    assert "set-cookie" not in response.headers


def test_login_needs_the_csrf_field(server: RunningServer) -> None:
    for cookies, field in (
        ({}, CSRF),
        ({"shelfrank_csrf": CSRF}, ""),
        ({"shelfrank_csrf": CSRF}, "x"),
    ):
        response = call(
            server,
            "POST",
            "/login",
            cookies=cookies,
            data={"token": TOKEN, "csrf": field, "next": "/"},
        )
        assert response.status_code == 403
        assert "shelfrank_session" not in set_cookies(response)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("https://evil.example", "/"),
        ("//evil.example/path", "/"),
        ("/\\evil.example", "/"),
        ("http:/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/\t/evil.example", "/"),  # browsers drop the tab: //evil.example
        ("/\n/evil.example", "/"),
        ("/users/u0?k=3", "/users/u0?k=3"),
        ("", "/"),
    ],
)
def test_no_open_redirect_after_login(server: RunningServer, target: str, expected: str) -> None:
    response = call(
        server,
        "POST",
        "/login",
        cookies={"shelfrank_csrf": CSRF},
        data={"token": TOKEN, "csrf": CSRF, "next": target},
    )
    assert response.status_code == 303
    assert response.headers["location"] == expected
    assert safe_next(target) == expected


def test_a_tab_encoded_in_the_login_form_is_no_way_out(server: RunningServer) -> None:
    """``next=/%09/evil.com`` as the form sends it: '/', a tab, '/evil.com'."""
    body = f"token={TOKEN}&csrf={CSRF}&next=/%09/evil.com".encode()
    response = call(
        server,
        "POST",
        "/login",
        cookies={"shelfrank_csrf": CSRF},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        content=body,
    )
    assert (response.status_code, response.headers["location"]) == (303, "/")


def test_logout_clears_the_session_under_the_csrf_check(server: RunningServer) -> None:
    session = session_of(server)
    cookies = {"shelfrank_session": session, "shelfrank_csrf": CSRF}
    assert call(server, "POST", "/logout", cookies=cookies).status_code == 403
    response = call(server, "POST", "/logout", cookies=cookies, headers={"X-CSRF-Token": CSRF})
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    cleared = set_cookies(response)["shelfrank_session"]
    assert cleared.value == ""
    assert cleared["max-age"] == "0"


@pytest.mark.parametrize(
    ("method", "path", "auth"),
    [
        ("GET", "/", True),
        ("GET", "/api/overview", True),
        ("GET", "/api/overview", False),  # 401
        ("GET", "/users/u0", False),  # 303
        ("GET", "/users/nobody", True),  # 404 page
        ("GET", "/api/nothing", True),  # 404 JSON
        ("GET", "/healthz", False),
        ("GET", "/login", False),
        ("GET", "/static/style.css", False),
        ("POST", "/api/items/shoe1/availability", False),
        ("POST", "/api/overview", True),  # 405
    ],
)
def test_security_headers_on_every_response(
    server: RunningServer, method: str, path: str, auth: bool
) -> None:
    response = call(server, method, path, headers=bearer() if auth else {})
    assert response.headers["content-security-policy"] == (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    if not path.startswith("/static/"):
        assert response.headers["cache-control"] == "no-store"


def test_ids_holding_markup_come_back_escaped_and_pages_stay_static(
    server: RunningServer,
) -> None:
    with Client(f"127.0.0.1:{server.port}", token=TOKEN) as client:
        client.upsert_items([Item(SCRIPT, ["category=shoes"])])
        client.track(
            [
                Event(SCRIPT, "shoe1", EventType.VIEW),
                Event("searcher", "shoe2", EventType.SEARCH, query=SCRIPT),
            ]
        )
    searched = call(server, "GET", "/api/users/searcher", headers=bearer())
    assert b"<" not in searched.content
    assert searched.json()["events"][0]["query"] == SCRIPT
    quoted = quote(SCRIPT, safe="")
    for path, key in ((f"/api/items/{quoted}", "item_id"), (f"/api/users/{quoted}", "user_id")):
        response = call(server, "GET", path, headers=bearer())
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert b"<" not in response.content
        assert b">" not in response.content
        assert b"\\u003cscript\\u003e" in response.content
        assert response.json()[key] == SCRIPT
    # The user page's lookup form goes on to the id's page; the pages never hold the id.
    lookup = call(server, "GET", "/users", params={"user_id": SCRIPT}, headers=bearer())
    assert (lookup.status_code, lookup.headers["location"]) == (303, f"/users/{quoted}")
    for path, shell in ((f"/users/{quoted}", "user"), (f"/items/{quoted}", "item")):
        page = call(server, "GET", path, headers=bearer())
        assert page.status_code == 200
        assert page.content == page_bytes(shell)
        assert b"alert(1)" not in page.content
    # No inline script or style anywhere: not in the pages, the layout or the fragments.
    sources = [path.read_bytes() for path in STATIC_DIR.rglob("*.html")]
    assert len(sources) == 1 + len(PAGES)
    for html in [*PAGES.values(), *sources]:
        text = html.decode()
        assert "<script>" not in text
        assert "<style" not in text
        assert " style=" not in text


def test_unknown_users_and_items_are_404_pages_and_404_json(server: RunningServer) -> None:
    for page, api in (
        ("/users/nobody", "/api/users/nobody"),
        ("/items/nothing", "/api/items/nothing"),
    ):
        response = call(server, "GET", page, headers=bearer())
        assert response.status_code == 404
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.content == page_bytes("not-found")
        response = call(server, "GET", api, headers=bearer())
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "NOT_FOUND"
    response = call(server, "GET", "/no/such/page", headers=bearer())
    assert (response.status_code, response.content) == (404, page_bytes("not-found"))


def test_pages_set_the_csrf_cookie_only_when_missing(server: RunningServer) -> None:
    first = call(server, "GET", "/", headers=bearer())
    assert "shelfrank_csrf" in set_cookies(first)
    again = call(server, "GET", "/", headers=bearer(), cookies={"shelfrank_csrf": CSRF})
    assert "set-cookie" not in again.headers


def test_without_a_token_the_dashboard_is_open_but_posts_need_csrf(
    open_server: RunningServer,
) -> None:
    assert call(open_server, "GET", "/").status_code == 200
    assert call(open_server, "GET", "/api/overview").status_code == 200
    path = "/api/items/shoe3/availability"
    refused = call(open_server, "POST", path, json={"available": False})
    assert refused.status_code == 403
    # A bearer header proves nothing when no token is configured: still the CSRF check.
    refused = call(open_server, "POST", path, headers=bearer(), json={"available": False})
    assert refused.status_code == 403
    response = call(
        open_server,
        "POST",
        path,
        cookies={"shelfrank_csrf": CSRF},
        headers={"X-CSRF-Token": CSRF},
        json={"available": False},
    )
    assert response.status_code == 200
    audit = call(open_server, "GET", "/api/items/shoe3").json()["audit"]
    assert audit[0]["actor"] == "anonymous"
    # The login form just goes on (nothing to log in to).
    login = call(
        open_server,
        "POST",
        "/login",
        cookies={"shelfrank_csrf": CSRF},
        data={"token": "", "csrf": CSRF, "next": "/items"},
    )
    assert (login.status_code, login.headers["location"]) == (303, "/items")


@pytest.mark.parametrize(
    "path", ["/static/../api/overview", "/static/%2e%2e/api/overview", "/static/../../etc/passwd"]
)
def test_static_paths_open_nothing_else(server: RunningServer, path: str) -> None:
    """Sent as is (an HTTP client would remove the dot segments): /static/* needs no token,
    so nothing under it may reach data."""
    import socket

    with socket.create_connection(("127.0.0.1", server.http_port or 0), timeout=30) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 404 Not Found"
    assert b"counts" not in answer
    assert b"root:" not in answer


def raw_get(server: RunningServer, path: str, host: str, headers: str = "") -> bytes:
    """A GET with exactly this Host header (an HTTP client would set its own)."""
    import socket

    with socket.create_connection(("127.0.0.1", server.http_port or 0), timeout=30) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_other_host_names_are_refused_dns_rebinding(open_server: RunningServer) -> None:
    """A hostile page whose name resolves to the dashboard's address sends its own name as
    the Host: refused, even on an open dashboard; /healthz holds nothing and answers."""
    port = open_server.http_port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        for path in ("/api/overview", "/", "/static/app.js", "/login"):
            answer = raw_get(open_server, path, host)
            assert answer.startswith(b"HTTP/1.1 400 "), (host, path)
            assert b"counts" not in answer
            assert b"set-cookie" not in answer.lower()  # no CSRF cookie for that origin
            assert b"content-security-policy:" in answer.lower()
    assert raw_get(open_server, "/healthz", "evil.example").startswith(b"HTTP/1.1 200 ")
    for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert raw_get(open_server, "/api/overview", host).startswith(b"HTTP/1.1 200 "), host
    refused = call(open_server, "GET", "/api/overview", headers={"Host": "evil.example"})
    assert refused.status_code == 400


def test_allowed_host_names() -> None:
    from shelfrank.core.errors import InvalidInputError
    from shelfrank.server.dashboard.hosts import allowed_hosts

    assert allowed_hosts("127.0.0.1", ()) == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts("::1", ()) == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts("10.0.0.5", ("Shop.Example", "*.dash.example")) == (
        "localhost",
        "127.0.0.1",
        "[::1]",
        "10.0.0.5",
        "shop.example",
        "*.dash.example",
    )
    assert allowed_hosts("0.0.0.0", ("shop.example",)) == (
        "localhost",
        "127.0.0.1",
        "[::1]",
        "shop.example",
    )
    assert allowed_hosts("fe80::1", ()) == ("localhost", "127.0.0.1", "[::1]", "[fe80::1]")
    assert allowed_hosts("127.0.0.1", ("*",)) == ("*",)
    for bad in ("", "a b", "evil.example/x", "shop.*.example", "x*"):
        with pytest.raises(InvalidInputError, match=r"http_allowed_hosts\[0\]"):
            allowed_hosts("127.0.0.1", (bad,))


def test_every_address_without_a_name_answers_any_host_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from shelfrank.server.dashboard.hosts import allowed_hosts

    with caplog.at_level(logging.WARNING, logger="shelfrank.dashboard"):
        assert allowed_hosts("0.0.0.0", ()) == ("*",)
        assert allowed_hosts("::", ()) == ("*",)
    warnings = [r for r in caplog.records if "DNS rebinding" in r.getMessage()]
    assert len(warnings) == 2


def test_a_public_name_is_answered_when_allowed(toy_model_dir: Path, tmp_path: Path) -> None:
    running = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=toy_model_dir,
            train_config=SERVER_CONFIG,
            http_port=0,
            http_allowed_hosts=("dash.example",),
        )
    )
    try:
        assert raw_get(running, "/api/overview", "dash.example").startswith(b"HTTP/1.1 200 ")
        assert raw_get(running, "/api/overview", "evil.example").startswith(b"HTTP/1.1 400 ")
    finally:
        running.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away key and self-signed certificate for localhost (needs openssl)."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_with_tls_the_dashboard_is_https_with_secure_cookies(
    toy_model_dir: Path, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    import ssl

    cert, key = certificate
    running = start(
        ServerOptions(
            state_dir=tmp_path / "state",
            port=0,
            model_dir=toy_model_dir,
            train_config=SERVER_CONFIG,
            token=TOKEN,
            tls_cert=cert,
            tls_key=key,
            http_port=0,
        )
    )
    try:
        base = f"https://localhost:{running.http_port}"
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=base, verify=trusted, timeout=30) as https:
            overview = https.get("/api/overview", headers=bearer())
            assert overview.status_code == 200
            assert overview.json()["model"]["version"] == running.service.state.model_version
            page = https.get("/login")
            csrf = set_cookies(page)["shelfrank_csrf"]
            assert csrf["secure"]
            login = https.post(
                "/login",
                headers={"Cookie": f"shelfrank_csrf={CSRF}"},
                data={"token": TOKEN, "csrf": CSRF, "next": "/"},
            )
            assert login.status_code == 303
            session = set_cookies(login)["shelfrank_session"]
            assert session["secure"]
            assert session["httponly"]
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on that port
            httpx.get(f"http://127.0.0.1:{running.http_port}/healthz", timeout=10)
    finally:
        running.stop()
