"""Entry points -> a pluggy plugin manager. The only module that touches entry points.

Rules:
- every entry point of the ``hookformer`` group is loaded, the built-in parts included (they have no shortcut);
- ``disabled`` names entry points not to load (CLI ``-p no:NAME``, env ``HOOKFORMER_DISABLE_PLUGINS=a,b``);
- with ``autoload=False`` (CLI ``--no-autoload``, env ``HOOKFORMER_DISABLE_PLUGIN_AUTOLOAD=1``) only the built-in
  distribution and the entry points named in ``enabled`` (CLI ``-p NAME``) are loaded;
- a plugin that fails to import, declares an unsupported API version, or whose hook implementations do not match
  the specs is a :class:`PluginError` that names the entry point and its distribution; every such problem is
  collected (the other plugins still load) and the caller decides (see ``Catalog.load``);
- the same plugin object reached through two entry points is registered once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from hookformer import API_VERSION
from hookformer.core import hookspecs
from hookformer.core.errors import PluginError

GROUP = "hookformer"
BUILTIN_DISTRIBUTION = "hookformer"
ENV_DISABLE = "HOOKFORMER_DISABLE_PLUGINS"
ENV_NO_AUTOLOAD = "HOOKFORMER_DISABLE_PLUGIN_AUTOLOAD"


@dataclass(frozen=True)
class PluginOrigin:
    """Where a registered plugin came from."""

    entry_point: str
    value: str
    distribution: str
    version: str

    def describe(self) -> str:
        return f'plugin "{self.entry_point}" ({self.value}) from distribution {self.distribution} {self.version}'


def _origin(ep: EntryPoint) -> PluginOrigin:
    dist = ep.dist
    return PluginOrigin(ep.name, ep.value, dist.name if dist else "<unknown>", dist.version if dist else "?")


def _env_names(variable: str) -> set[str]:
    return {name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()}


def autoload_from_env() -> bool:
    return os.environ.get(ENV_NO_AUTOLOAD, "") in ("", "0", "false", "False")


def _check_api(plugin: object, origin: PluginOrigin) -> None:
    declared = getattr(plugin, "HOOKFORMER_API", None)
    if declared is None:
        return
    try:
        supported = SpecifierSet(str(declared))
    except InvalidSpecifier as exc:
        raise PluginError(
            f"{origin.describe()} declares HOOKFORMER_API = {declared!r}, which is not a version specifier "
            f'(write e.g. ">=1.0,<2"): {exc}'
        ) from None
    if Version(API_VERSION) not in supported:
        raise PluginError(
            f"{origin.describe()} supports hookformer plugin API {declared}, but this hookformer provides API "
            f"{API_VERSION}. Install a version of {origin.distribution} made for API {API_VERSION}, or disable it "
            f"with -p no:{origin.entry_point}."
        )


def load_plugins(
    disabled: set[str] | None = None,
    enabled: set[str] | None = None,
    autoload: bool | None = None,
) -> tuple[pluggy.PluginManager, dict[str, PluginOrigin], list[PluginError]]:
    """Load the plugins named by entry points into a new plugin manager.

    Returns the manager, where each registered plugin came from, and the problems of the plugins that could not be
    loaded (each a PluginError naming the entry point, its distribution and the switch that skips it): one broken
    plugin neither hides the others' problems nor stops the others from loading.
    """
    disabled = set(disabled or ()) | _env_names(ENV_DISABLE)
    enabled = set(enabled or ())
    autoload = autoload_from_env() if autoload is None else autoload

    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    origins: dict[str, PluginOrigin] = {}
    problems: list[PluginError] = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        origin = _origin(ep)
        if ep.name in disabled:
            continue
        if not autoload and origin.distribution != BUILTIN_DISTRIBUTION and ep.name not in enabled:
            continue
        try:
            name = _register(manager, ep, origin)
        except PluginError as exc:
            problems.append(exc)
            continue
        if name is not None:
            origins[name] = origin
    return manager, origins, problems


def skip_hint(origin: PluginOrigin) -> str:
    return f"Fix or uninstall {origin.distribution}, or skip it with -p no:{origin.entry_point} (or {ENV_DISABLE}=" \
           f"{origin.entry_point})."


def _register(manager: pluggy.PluginManager, ep: EntryPoint, origin: PluginOrigin) -> str | None:
    """Import the entry point and register its plugin; its name in the manager (None: already registered)."""
    try:
        plugin = ep.load()
    except Exception as exc:  # any failure inside a plugin's import is reported, not raised as is
        raise PluginError(f"Error importing {origin.describe()}: {type(exc).__name__}: {exc}. {skip_hint(origin)}"
                          ) from exc
    _check_api(plugin, origin)
    if manager.is_registered(plugin):
        return None
    name = f"{origin.distribution}:{ep.name}"
    try:
        manager.register(plugin, name=name)
        manager.check_pending()  # a hook implementation that no spec names (a typo) is an error too
    except pluggy.PluginValidationError as exc:
        if manager.is_registered(plugin):
            manager.unregister(plugin)
        detail = " ".join(str(exc).split())
        raise PluginError(
            f"{origin.describe()} has a hook implementation that does not match the plugin API: {detail}. "
            f"Hook arguments must be a subset of the spec's arguments (see hookformer.core.hookspecs). "
            f"{skip_hint(origin)}"
        ) from None
    _check_distribution_hooks(manager, plugin, origin)
    return name


def _check_distribution_hooks(manager: pluggy.PluginManager, plugin: object, origin: PluginOrigin) -> None:
    """Run hooks (build wrappers, run events) of an entry-point plugin would act on every run without the run's config
    saying so; they belong to a hook part that a run lists in its ``hooks:`` section."""
    stray = sorted(caller.name for caller in manager.get_hookcallers(plugin) or ()
                   if caller.name not in hookspecs.DISTRIBUTION_HOOKS)
    if stray:
        manager.unregister(plugin)
        raise PluginError(
            f"{origin.describe()} implements {', '.join(stray)} at the entry point itself. An entry-point plugin "
            f"implements only {' and '.join(hookspecs.DISTRIBUTION_HOOKS)}; move the run hooks into a hook part "
            f'(PartSpec("hook", NAME, ...)) whose built object implements them, and list it in a run\'s hooks: '
            f"section. {skip_hint(origin)}"
        )
