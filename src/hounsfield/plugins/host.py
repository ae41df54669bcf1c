"""The server's side of the plugin API: the loaded plugins, their events handed to the ``Runner`` and their
filters called where the request is answered, each failure logged with the plugin's name.

The composition root (``pacs``) subscribes ``emit`` to the services' listeners and the index feed, and gives
the DIMSE handlers ``admit``, ``rewrite_query`` and ``rewrite_answer`` when a plugin has such a filter.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from pydicom.dataset import Dataset

from hounsfield.dicomfile import Header
from hounsfield.errors import RefusedByPolicy
from hounsfield.plugins.api import Caller, Context, IncomingInstance, Plugin, Reject, Route
from hounsfield.plugins.runner import Runner

log = logging.getLogger("hounsfield.plugins")


class Plugins:
    def __init__(self, plugins: list[Plugin], context: Callable[[str], Context], runner: Runner | None = None) -> None:
        self.plugins = plugins
        self.contexts = {p.name: context(p.name) for p in plugins}
        self.runner = runner or Runner()

    def __bool__(self) -> bool:
        return bool(self.plugins)

    def has(self, kind: str) -> bool:
        return any(p.of(kind) for p in self.plugins)

    # ---- events: queued, run by each plugin's worker --------------------------------------------------
    def emit(self, kind: str, *args: Any) -> None:
        """Queue ``kind``'s callbacks of every plugin with ``(ctx, *args)``; returns at once."""
        for plugin in self.plugins:
            for func in plugin.of(kind):
                self.runner.submit(plugin.name, kind, func, self.contexts[plugin.name], *args)

    def emitter(self, kind: str, convert: Callable[[Any], Any] = lambda e: e) -> Callable[[Any], None]:
        """A listener for a service (``events.Listeners``) emitting ``kind``; ``convert`` runs in the plugin's
        worker, off the service's path (reading a logged HL7 message, say)."""
        def listener(event: Any) -> None:
            for plugin in self.plugins:
                for func in plugin.of(kind):
                    ctx = self.contexts[plugin.name]
                    self.runner.submit(plugin.name, kind, lambda f=func, c=ctx: f(c, convert(event)))
        return listener

    # ---- filters: synchronous, a failing one is ignored --------------------------------------------------
    def admit(self, header: Header, calling_ae: str, address: str) -> None:
        """``filter_incoming_store`` of every plugin in turn; raises ``RefusedByPolicy`` at the first refusal."""
        offered = IncomingInstance(header, Caller(calling_ae, address))
        for plugin, func in self._filters("filter_incoming_store"):
            try:
                verdict = func(self.contexts[plugin.name], offered)
            except Exception:  # noqa: BLE001 - a broken filter never loses an instance
                log.exception("plugin %s: filter_incoming_store %s failed; the instance %s is taken", plugin.name,
                              func.__name__, offered.sop_instance_uid)
                continue
            if isinstance(verdict, Reject):
                raise RefusedByPolicy(f"refused by plugin {plugin.name}: {verdict.reason}", verdict.status)

    def rewrite_query(self, identifier: Dataset, calling_ae: str, address: str) -> Dataset:
        """``filter_worklist_query`` of every plugin in turn, each given what the one before returned."""
        caller = Caller(calling_ae, address)
        for plugin, func in self._filters("filter_worklist_query"):
            try:
                rewritten = func(self.contexts[plugin.name], identifier, caller)
            except Exception:  # noqa: BLE001 - the query is answered as it came
                log.exception("plugin %s: filter_worklist_query %s failed; the query is left as it was",
                              plugin.name, func.__name__)
                continue
            if isinstance(rewritten, Dataset):
                identifier = rewritten
        return identifier

    def rewrite_answer(self, answer: Dataset, identifier: Dataset, calling_ae: str, address: str) -> Dataset | None:
        """``filter_worklist_answer`` of every plugin in turn; None as soon as one leaves the answer out."""
        caller = Caller(calling_ae, address)
        for plugin, func in self._filters("filter_worklist_answer"):
            try:
                answer = func(self.contexts[plugin.name], answer, identifier, caller)
            except Exception:  # noqa: BLE001 - the answer is sent as it was
                log.exception("plugin %s: filter_worklist_answer %s failed; the answer is sent as it was",
                              plugin.name, func.__name__)
                continue
            if answer is None:
                return None
        return answer

    def _filters(self, kind: str) -> list[tuple[Plugin, Callable[..., Any]]]:
        return [(p, f) for p in self.plugins for f in p.of(kind)]

    # ---- HTTP routes ----------------------------------------------------------------------------------
    def routes(self) -> list[tuple[Plugin, Route]]:
        return [(p, r) for p in self.plugins for r in p.routes]

    def permission_for(self, method: str, path: str) -> str | None:
        """The permission a plugin's route declared for a request to it; None for any other request."""
        from starlette.routing import compile_path

        method = "GET" if method == "HEAD" else method
        for _plugin, route in self.routes():
            if method in route.methods and compile_path(route.path)[0].match(path):
                return route.permission
        return None

    def close(self, grace: float = 5.0) -> None:
        self.runner.close(grace)
