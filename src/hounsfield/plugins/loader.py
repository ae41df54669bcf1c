"""Loading plugin files: each file is run once as a module of its own, and what its decorators registered
(``api.Plugin``) is kept. A file that is missing, does not compile or raises at its top level is a
``PluginError`` naming the file, in one line: ``serve`` refuses to start rather than run without it."""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
from pathlib import Path

from hounsfield.plugins import api
from hounsfield.plugins.api import Plugin, PluginError


def paths_of(setting: str) -> list[Path]:
    """The files of the ``plugins`` setting (comma-separated; a TOML array is joined with commas), absolute:
    the DICOM processes load them too."""
    return [Path(p.strip()).expanduser().absolute() for p in setting.split(",") if p.strip()]


def load_all(paths: list[Path]) -> list[Plugin]:
    plugins: list[Plugin] = []
    for path in paths:
        plugin = load(path)
        clash = next((p for p in plugins if p.name == plugin.name), None)
        if clash is not None:
            raise PluginError(f"plugin {path}: its name {plugin.name!r} is taken by {clash.path} (plugins are "
                              f"named after their file)")
        plugins.append(plugin)
    return plugins


def load(path: Path) -> Plugin:
    """Run the plugin file at ``path``; its name is the file's stem."""
    if not path.is_file():
        raise PluginError(f"plugin {path}: no such file")
    try:
        source = path.read_text(encoding="utf-8")
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise PluginError(f"plugin {path}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PluginError(f"plugin {path}: cannot be read: {exc}") from None
    name = path.stem
    module_name = f"hounsfield_plugin_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    plugin = Plugin(name, path, module)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    api._loading = plugin
    try:
        exec(code, module.__dict__)  # noqa: S102 - running the site's own plugin file is the point
    except PluginError as exc:
        raise PluginError(f"plugin {path}: {exc}") from None
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: a plugin must not end the server
        line = next((f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__)) if f.filename == str(path)),
                    None)
        where = f" at line {line}" if line else ""
        raise PluginError(f"plugin {path}: failed when loaded{where}: {type(exc).__name__}: {exc}") from None
    finally:
        api._loading = None
    return plugin
