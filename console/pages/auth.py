"""Signing in with an API key, and out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.app import HOME, current_session, gateway_of, page, sessions_of, settings_of
from console.errors import ApiError
from console.sessions import COOKIE


def _safe_next(raw: str | None) -> str | None:
    # Only a path of this console: never an open redirect to another site.
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return None


async def home(request: Request) -> Response:
    session = current_session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(HOME.get(session.caller.kind, "/orders"), status_code=303)


async def login_form(request: Request) -> Response:
    return page(request, "login.html", {"next": _safe_next(request.query_params.get("next")) or ""})


async def login(request: Request) -> Response:
    form = await request.form()
    key = str(form.get("api_key") or "").strip()
    target = _safe_next(str(form.get("next") or ""))
    if not key:
        return page(request, "login.html", {"error": "Enter your API key.", "next": target or ""}, 400)
    try:
        caller = await gateway_of(request).as_user(key).caller()
    except ApiError as error:
        sentence = "Tutti does not know this key." if error.signed_out else error.sentence
        return page(request, "login.html", {"error": sentence, "next": target or ""}, 401)
    sessions = sessions_of(request)
    sessions.close(request.cookies.get(COOKIE))  # a new session id at every sign-in (no fixation)
    session = sessions.open(key, caller)
    response = RedirectResponse(target or HOME.get(caller.kind, "/orders"), status_code=303)
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=int(sessions.lifetime_seconds),
        httponly=True,
        secure=settings_of(request).secure_cookies,
        samesite="strict",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    sessions_of(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=settings_of(request).secure_cookies
    )
    if request.headers.get("hx-request") == "true":
        response.headers["HX-Redirect"] = "/login"
    return response


ROUTES = [
    ("/", home, ["GET"]),
    ("/login", login_form, ["GET"]),
    ("/login", login, ["POST"]),
    ("/logout", logout, ["POST"]),
]
