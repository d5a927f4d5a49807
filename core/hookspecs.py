"""The plugin API. Every hook spec's docstring is its reference.

A plugin is a module (or object) named by an entry point in the ``hookformer`` group::

    [project.entry-points.hookformer]
    my_plugin = "my_package.hookformer_plugin"

It implements hooks with :data:`hookimpl`. A plugin module may declare the plugin API versions it supports with a
module attribute ``HOOKFORMER_API = ">=1.0,<2"`` (a PEP 440 specifier); outside that range it is refused.

Hook specs only ever grow by new optional arguments: an implementation may accept any subset of a spec's arguments,
so plugins written against an older API keep working.
"""

from __future__ import annotations

import pluggy

PROJECT = "hookformer"
hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate your hook implementations with this marker.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hookformer_parts() -> list:
    """Return the parts this plugin contributes, as a list of :class:`hookformer.core.parts.PartSpec`.

    Called once when the catalog is built, before any run; it must be cheap and import nothing heavy (give the
    factory and options model as "module:attribute" strings so that ``hookformer plugins list`` stays fast).
    A plugin may contribute parts to any number of stages. A (stage, name) pair that another distribution already
    registers is an error unless the spec says ``override=True``.
    """
