"""The console's ASGI application: sign-in, sessions, anti-forgery, the pages, server push.

Pages are rendered on the server (Jinja2) and kept live by htmx over server-sent events; the
gateway stays the source of truth, and every figure on a page is what the API answered for the
signed-in user's key.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from console import present
from console.errors import ApiError
from console.gateway import Gateway
from console.metrics import ConsoleMetrics, Measured
from console.sessions import COOKIE, Session, Sessions
from console.settings import ConsoleSettings
from runtime.metrics import Metrics, serving_metrics

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# Front-end libraries come from the npm registry at `make install` (console/package.json).
VENDOR = HERE / "node_modules"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(present.FILTERS)
templates.env.globals["words"] = present.words
templates.env.globals["slug"] = present.slug


# Where each kind of principal lands after signing in, and which pages it sees in the menu.
HOME = {
    "admin": "/dashboard",
    "store": "/store",
    "channel": "/orders",
    "service": "/stock",
    "terminal": "/stock",
}
MENU = {
    "admin": [("Dashboard", "/dashboard"), ("Orders", "/orders"), ("Stock", "/stock"), ("Rules", "/rules")],
    "store": [
        ("Store", "/store"),
        ("Returns counter", "/store/returns"),
        ("Orders", "/orders"),
        ("Stock", "/stock"),
    ],
    "channel": [("Orders", "/orders"), ("Stock", "/stock")],
    "service": [("Orders", "/orders"), ("Stock", "/stock")],
    "terminal": [("Stock", "/stock")],
}


class Forbidden(Exception):
    """The signed-in principal may not open this page (the gateway would refuse its calls)."""


def sessions_of(request: Request) -> Sessions:
    return request.app.state.sessions  # type: ignore[no-any-return]


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def settings_of(request: Request) -> ConsoleSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def current_session(request: Request) -> Session | None:
    return sessions_of(request).get(request.cookies.get(COOKIE))


def require(request: Request, *kinds: str) -> Session:
    """The signed-in session, allowed for ``kinds`` (any kind when none given); otherwise the
    caller is sent to sign in (no session) or refused (another kind)."""
    session = current_session(request)
    if session is None:
        raise SignIn(request.url)
    if kinds and session.caller.kind not in kinds:
        raise Forbidden(request.url.path)
    return session


class SignIn(Exception):
    def __init__(self, url: URL) -> None:
        self.url = url


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    session = current_session(request)
    notices = []
    if session is not None:
        notices, session.notices = session.notices, []
    full = {
        "session": session,
        "caller": session.caller if session else None,
        "menu": MENU.get(session.caller.kind, []) if session else [],
        "notices": notices,
        "path": request.url.path,
        **context,
    }
    return templates.TemplateResponse(request, name, full, status_code=status_code)


def fragment(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    session = current_session(request)
    return templates.TemplateResponse(
        request,
        name,
        {"session": session, "caller": session.caller if session else None, **context},
        status_code=status_code,
    )


def form_error(request: Request, sentence: str, fields: dict[str, str] | None = None) -> HTMLResponse:
    """A refusal shown above the form that was sent: the sentence, then each field it names."""
    return fragment(request, "_form_error.html", {"sentence": sentence, "fields": fields or {}})


def refused_by_api(request: Request, error: ApiError) -> HTMLResponse:
    return form_error(request, error.sentence, error.fields)


def render(name: str, **context: Any) -> str:
    """A fragment as a string, for server push."""
    return templates.get_template(name).render(**context)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


# --- security ----------------------------------------------------------------------------------


class SecurityHeaders:
    """Headers every answer carries: no framing, no sniffing, scripts only from this origin."""

    HEADERS = [
        (
            b"content-security-policy",
            b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"x-frame-options", b"DENY"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)  # type: ignore[arg-type]


async def check_forgery(request: Request) -> None:
    """A state-changing request must come from this origin and, once signed in, carry the
    session's token (form field ``csrf_token`` or header ``X-CSRF-Token``)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        expected = f"{request.url.scheme}://{request.url.netloc}"
        if origin != expected:
            raise HTTPException(403, "This request came from another site and was refused.")
    session = current_session(request)
    if session is None or request.url.path == "/login":
        # Signing in (again): no session to forge a request for; the origin check applies, and
        # a new session replaces any old one.
        return
    token = request.headers.get("x-csrf-token")
    if token is None:
        form = await request.form()
        value = form.get("csrf_token")
        token = value if isinstance(value, str) else None
    if not session.csrf_ok(token):
        raise HTTPException(403, "This form has expired or did not come from the console. Reload the page.")


def guarded(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Every endpoint: anti-forgery on unsafe methods, sign-in redirects, refusals as pages."""

    async def handle(request: Request) -> Response:
        try:
            if request.method in UNSAFE_METHODS:
                await check_forgery(request)
            return await endpoint(request)
        except SignIn as exc:
            target = f"/login?next={exc.url.path}"
            if is_htmx(request):
                return Response(status_code=204, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
        except Forbidden:
            return page(
                request,
                "error.html",
                {
                    "title": "Not for this key",
                    "sentence": "The key you signed in with may not open this page.",
                },
                status_code=403,
            )
        except ApiError as error:
            if error.signed_out:
                sessions_of(request).close(request.cookies.get(COOKIE))
            if is_htmx(request):
                return fragment(request, "_error.html", {"error": error}, status_code=200)
            return page(
                request, "error.html", {"title": "Refused", "sentence": error.sentence}, status_code=400
            )

    return handle


# --- the app -------------------------------------------------------------------------------------


def routes() -> list[Route | Mount]:
    from console.pages import auth, dashboard, orders, rules, stock, store

    table: list[Route | Mount] = []
    for module in (auth, dashboard, orders, stock, rules, store):
        for path, endpoint, methods in module.ROUTES:
            table.append(Route(path, guarded(endpoint), methods=methods))
    table.append(Route("/healthz", healthz))
    table.append(Route("/readyz", readyz))
    table.append(Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"))
    table.append(Mount("/vendor", StaticFiles(directory=str(VENDOR), check_dir=False), name="vendor"))
    return table


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    """Ready once the gateway answers (an unknown key is refused UNAUTHENTICATED: it is up)."""
    try:
        await gateway_of(request).as_user("readiness-probe").caller()
    except ApiError as error:
        if error.signed_out:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "why": error.sentence}, status_code=503)
    return JSONResponse({"ready": True})


async def not_found(request: Request, exc: Exception) -> Response:
    return page(
        request, "error.html", {"title": "Not found", "sentence": "There is no such page."}, status_code=404
    )


async def refused(request: Request, exc: Exception) -> Response:
    detail = getattr(exc, "detail", "Refused.")
    code = getattr(exc, "status_code", 400)
    if is_htmx(request):
        return HTMLResponse(f'<p class="notice error" role="alert">{detail}</p>', status_code=code)
    return page(request, "error.html", {"title": "Refused", "sentence": detail}, status_code=code)


def create_app(settings: ConsoleSettings, gateway: Gateway | None = None) -> Starlette:
    sessions = Sessions(settings.session_hours * 3600)
    # Metrics only where they are served (a test app passes its own gateway and serves none).
    measured = ConsoleMetrics(Metrics("console"), sessions) if settings.metrics_address else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.sessions = sessions
        app.state.metrics = measured
        app.state.gateway = gateway or Gateway(settings, measured.metrics if measured else None)
        with contextlib.ExitStack() as exposed:
            if measured is not None:
                exposed.enter_context(serving_metrics(measured.metrics, settings.metrics_address))
            try:
                yield
            finally:
                await app.state.gateway.close()

    return Starlette(
        routes=routes(),
        middleware=[Middleware(Measured, metrics=measured), Middleware(SecurityHeaders)],
        exception_handlers={404: not_found, 403: refused, 400: refused},
        lifespan=lifespan,
    )
