"""The HTTP endpoints plugins add with ``@api.route`` (issue 14), under ``/api/plugins/``.

An endpoint is the plugin's own FastAPI function; a parameter named ``ctx`` is not read from the request but
given the plugin's ``Context``. Each needs the permission its route declared (``web.auth`` asks the plugins for
paths under ``/api/plugins/``; admin unless declared otherwise), like every other route."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from fastapi import FastAPI

from hounsfield.plugins.api import Context
from hounsfield.plugins.host import Plugins


def with_context(endpoint: Callable[..., Any], ctx: Context) -> Callable[..., Any]:
    """``endpoint`` without its ``ctx`` parameter, which is given ``ctx``."""
    signature = inspect.signature(endpoint)
    if "ctx" not in signature.parameters:
        return endpoint
    shown = signature.replace(parameters=[p for n, p in signature.parameters.items() if n != "ctx"])
    if inspect.iscoroutinefunction(endpoint):
        @functools.wraps(endpoint)
        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            return await endpoint(*args, ctx=ctx, **kwargs)
        wrapped: Callable[..., Any] = wrapped_async
    else:
        @functools.wraps(endpoint)
        def wrapped_sync(*args: Any, **kwargs: Any) -> Any:
            return endpoint(*args, ctx=ctx, **kwargs)
        wrapped = wrapped_sync
    wrapped.__signature__ = shown  # type: ignore[attr-defined]
    return wrapped


def add(app: FastAPI, plugins: Plugins) -> None:
    for plugin, route in plugins.routes():
        app.add_api_route(route.path, with_context(route.endpoint, plugins.contexts[plugin.name]),
                          methods=list(route.methods), tags=[f"plugin {plugin.name}"],
                          summary=(route.endpoint.__doc__ or "").strip().split("\n")[0] or None)
