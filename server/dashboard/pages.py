"""The pages: static HTML shells that ``app.js`` fills from the API, so no page ever holds
data the server put into it. Each shell is put together once, when the app is made, from
server/dashboard/static/layout.html (head, header and nav, status region) and the page's
own ``<main>`` contents in static/pages/; only the static files go into them, never
anything from a request. The server only chooses which shell (a user or item page for a
known id, else the not-found page with 404), sets the CSRF cookie, and runs the login form.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from shelfrank.core.errors import InvalidInputError
from shelfrank.server.dashboard.context import DashboardContext
from shelfrank.server.dashboard.errors import http_status
from shelfrank.server.dashboard.inputs import read_form
from shelfrank.server.dashboard.sessions import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_SECONDS,
    csrf_matches,
    new_csrf_token,
    safe_next,
)
from shelfrank.server.grpc_servicer import status_of

HTML = "text/html; charset=utf-8"
LAYOUT = "layout.html"
FRAGMENTS = "pages"  # under the static folder; /static/ does not serve .html (http_app.py)
NAV = ("overview", "users", "items", "experiments", "evaluations")  # the layout's {current:…}


@dataclass(frozen=True, kw_only=True)
class PageSpec:
    """What one page puts into the layout besides its ``<main>`` contents."""

    fragment: str  # static/pages/<fragment>: what follows the status region in <main>
    title: str  # the <title> (before " · shelfrank") and the <h1>
    nav: str | None  # the main-nav link marked aria-current="page"
    title_id: bool = False  # <h1 id="page-title">, which app.js sets to the user or item id
    charts: bool = False  # loads the vendored uPlot (the layout's charts block)
    signed_in: bool = True  # has the sign-out form (the layout's signed-in block)


SPECS: dict[str, PageSpec] = {
    "overview": PageSpec(fragment="overview.html", title="Overview", nav="overview", charts=True),
    "users": PageSpec(fragment="users.html", title="Shoppers", nav="users"),
    "user": PageSpec(fragment="user.html", title="Shopper", nav="users", title_id=True),
    "items": PageSpec(fragment="items.html", title="Items", nav="items"),
    "item": PageSpec(fragment="item.html", title="Item", nav="items", title_id=True),
    "experiments": PageSpec(
        fragment="experiments.html", title="Experiments", nav="experiments", charts=True
    ),
    "evaluations": PageSpec(fragment="evaluations.html", title="Evaluations", nav="evaluations"),
    "login": PageSpec(fragment="login.html", title="Sign in", nav=None, signed_in=False),
    "not-found": PageSpec(fragment="not_found.html", title="Not found", nav=None),
}

# <!--name--> … <!--/name-->, each marker on a line of its own: kept or dropped whole.
_BLOCK = re.compile(r"^[ \t]*<!--([a-z-]+)-->\n(.*?)^[ \t]*<!--/\1-->\n", re.M | re.S)
_PLACEHOLDER = re.compile(r"\{([a-z_]+(?::[a-z]+)?)\}")


def assemble(layout: str, fragment: str, page: str, spec: PageSpec) -> str:
    """One page: the layout with its optional blocks kept or dropped and its placeholders
    filled, in one pass (so nothing in the fragment is taken for a placeholder)."""
    blocks = {"charts": spec.charts, "signed-in": spec.signed_in}

    def block(match: re.Match[str]) -> str:
        return match.group(2) if blocks[match.group(1)] else ""

    values = {
        "title": spec.title,
        "page": page,
        "title_id": ' id="page-title"' if spec.title_id else "",
        "main": fragment.removesuffix("\n"),
    }
    values.update(
        {f"current:{name}": ' aria-current="page"' if name == spec.nav else "" for name in NAV}
    )
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], _BLOCK.sub(block, layout))


def assemble_pages(static_dir: Path) -> dict[str, bytes]:
    """Every page's HTML, from the layout and the fragments in ``static_dir``."""
    layout = (static_dir / LAYOUT).read_text(encoding="utf-8")
    return {
        page: assemble(
            layout, (static_dir / FRAGMENTS / spec.fragment).read_text(encoding="utf-8"), page, spec
        ).encode("utf-8")
        for page, spec in SPECS.items()
    }


class Pages:
    def __init__(self, context: DashboardContext) -> None:
        self.context = context
        self.html = assemble_pages(context.static_dir)  # once, when the app is made

    def routes(self) -> list[Route]:
        def fixed(page: str) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                return self.shell(request, page)

            return endpoint

        return [
            Route("/", fixed("overview"), methods=["GET"]),
            Route("/users", self.users, methods=["GET"]),
            Route("/users/{user_id:path}", self.user, methods=["GET"]),
            Route("/items", self.items, methods=["GET"]),
            Route("/items/{item_id:path}", self.item, methods=["GET"]),
            Route("/experiments", fixed("experiments"), methods=["GET"]),
            Route("/evaluations", fixed("evaluations"), methods=["GET"]),
            Route("/login", fixed("login"), methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]

    def shell(self, request: Request, page: str, status: int = 200) -> Response:
        """A page's shell, with a CSRF cookie for the browser when it has none yet (Secure
        when the dashboard is served over HTTPS)."""
        response = Response(self.html[page], status_code=status, media_type=HTML)
        if not request.cookies.get(CSRF_COOKIE):
            response.set_cookie(
                CSRF_COOKIE,
                new_csrf_token(),
                path="/",
                secure=self.context.tls,
                httponly=False,  # the page's script reads it to send it back (double submit)
                samesite="strict",
            )
        return response

    async def users(self, request: Request) -> Response:
        return self._lookup(request, "user_id", "/users/", "users")

    async def items(self, request: Request) -> Response:
        return self._lookup(request, "item_id", "/items/", "items")

    def _lookup(self, request: Request, name: str, prefix: str, page: str) -> Response:
        """The lookup form's GET (works without the script): on to the id's page."""
        wanted = request.query_params.get(name, "").strip()
        if wanted:
            return RedirectResponse(prefix + quote(wanted, safe=""), status_code=303)
        return self.shell(request, page)

    async def user(self, request: Request) -> Response:
        user_id = request.path_params["user_id"]
        return await self._known(request, "user", self.context.service.user_record, user_id)

    async def item(self, request: Request) -> Response:
        item_id = request.path_params["item_id"]
        return await self._known(request, "item", self.context.service.item_record, item_id)

    async def _known(
        self, request: Request, page: str, look_up: Callable[[str], object], wanted: str
    ) -> Response:
        """The page of a known user or item, else the not-found page with the API's
        status for it (404 unknown, 400 an id that cannot exist, 503 store away)."""
        try:
            await run_in_threadpool(look_up, wanted)
        except Exception as exc:
            code, _ = status_of(exc, f"GET {request.url.path}")
            return self.shell(request, "not-found", http_status(code))
        return self.shell(request, page)

    async def login(self, request: Request) -> Response:
        """The login form: the CSRF field must match the cookie; a right token sets the
        session cookie and goes on to ``next`` (a path on this site only)."""
        try:
            form = await read_form(request)
        except InvalidInputError:
            return self.shell(request, "login", 400)
        if not csrf_matches(request.cookies.get(CSRF_COOKIE), form.get("csrf")):
            return self.shell(request, "login", 403)
        target = safe_next(form.get("next"))
        access = self.context.access
        if not access.required:
            return RedirectResponse(target, status_code=303)
        caller = access.callers.authenticate(f"Bearer {form.get('token', '')}")
        if caller is None:
            return self.shell(request, "login", 401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            access.sessions.cookie_for(caller, int(time.time() * 1000)),
            max_age=SESSION_SECONDS,
            path="/",
            secure=self.context.tls,
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """Clears the session (under the CSRF check: header, or the form's field)."""
        given = request.headers.get(CSRF_HEADER)
        if given is None:
            try:
                given = (await read_form(request)).get("csrf")
            except InvalidInputError:
                given = None
        if not csrf_matches(request.cookies.get(CSRF_COOKIE), given):
            return self.shell(request, "login", 403)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=self.context.tls, httponly=True, samesite="strict"
        )
        return response
