"""The catalog: stage -> name -> registered part, with the distribution that provides it."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass

from hookformer.core.errors import HookformerError, PluginError
from hookformer.core.parts import STAGES, PartSpec, resolve
from hookformer.registry.discovery import PluginOrigin, load_plugins, skip_hint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogEntry:
    spec: PartSpec
    origin: PluginOrigin

    @property
    def provider(self) -> str:
        return f"{self.origin.distribution} {self.origin.version}"

    def options_model(self):
        """The part's options model class (imports the part's module if it was given by reference)."""
        return self._resolve(self.spec.options_model)

    def capabilities(self):
        """The part's declared capabilities (resolved if given by reference), or None."""
        return self._resolve(lambda: resolve(self.spec.capabilities))

    def build(self, options, ctx):
        """Build the part; see PartSpec.build."""
        factory = self._resolve(lambda: resolve(self.spec.factory))
        return factory(options, ctx)

    def _resolve(self, load):
        try:
            return load()
        except (ImportError, AttributeError) as exc:
            raise PluginError(
                f"{self.spec.stage} part \"{self.spec.name}\" of {self.origin.describe()} cannot be loaded: "
                f"{type(exc).__name__}: {exc}. Reinstall {self.origin.distribution} or choose another "
                f"{self.spec.stage}."
            ) from exc


class Catalog:
    """Every registered part, by stage and name."""

    def __init__(self, entries: dict[str, dict[str, CatalogEntry]], configure_hooks: list | None = None):
        self._entries = entries
        self._configure_hooks = configure_hooks or []  # (origin, hook implementation) of hookformer_configure
        self.problems: list[PluginError] = []  # what could not be loaded (see load)

    @classmethod
    def load(cls, disabled=None, enabled=None, autoload=None, strict: bool = True) -> "Catalog":
        """Discover plugins through entry points and collect the parts they contribute.

        Every problem is collected first: plugins that cannot be imported or registered, ``hookformer_parts``
        failures, name clashes between distributions. With ``strict`` (commands that run something) any problem is
        one PluginError listing them all, each with the switch that skips its plugin: a broken plugin might have
        replaced a part the run uses, so a run never starts without it silently. Without ``strict`` (listing parts)
        the catalog holds what loaded, and ``problems`` the rest."""
        manager, origins, problems = load_plugins(disabled=disabled, enabled=enabled, autoload=autoload)
        entries: dict[str, dict[str, CatalogEntry]] = {stage: {} for stage in STAGES}
        for impl in manager.hook.hookformer_parts.get_hookimpls():
            origin = origins[impl.plugin_name]
            try:
                specs = list(impl.function() or ())
                wrong = [spec for spec in specs if not isinstance(spec, PartSpec)]
                if wrong:
                    raise TypeError(f"returned {wrong[0]!r}; expected PartSpec objects")
            except Exception as exc:
                problems.append(PluginError(f"{origin.describe()} failed in hookformer_parts(): "
                                            f"{type(exc).__name__}: {exc}. {skip_hint(origin)}"))
                continue
            for spec in specs:
                try:
                    cls._add(entries[spec.stage], CatalogEntry(spec, origin))
                except PluginError as exc:
                    problems.append(exc)
        configure = [(origins[impl.plugin_name], impl) for impl in manager.hook.hookformer_configure.get_hookimpls()]
        if strict and problems:
            raise PluginError(problems[0] if len(problems) == 1 else f"{len(problems)} plugin problems: " + " ".join(
                f"({i}) {problem}" for i, problem in enumerate(problems, 1)))
        catalog = cls(entries, configure)
        catalog.problems = problems
        return catalog

    def configure(self, raw: dict) -> None:
        """Call every loaded plugin's ``hookformer_configure(raw)`` (see the hook spec), in load order. A
        ConfigError it raises is the user's to fix; any other exception is the plugin's, reported with its origin."""
        for origin, impl in reversed(self._configure_hooks):  # pluggy keeps the last registered first
            try:
                impl.function(**{name: raw for name in impl.argnames})
            except HookformerError:
                raise
            except Exception as exc:
                raise PluginError(f"{origin.describe()} failed in hookformer_configure(): {type(exc).__name__}: "
                                  f"{exc}. Fix or uninstall {origin.distribution}, or skip it with "
                                  f"-p no:{origin.entry_point}.") from exc

    @staticmethod
    def _add(stage_entries: dict[str, CatalogEntry], entry: CatalogEntry) -> None:
        spec = entry.spec
        existing = stage_entries.get(spec.name)
        if existing is None or existing.spec == spec:
            stage_entries[spec.name] = entry
            return
        if spec.override and not existing.spec.override:
            log.warning("part %s/%s from %s overrides the one from %s", spec.stage, spec.name, entry.provider,
                        existing.provider)
            stage_entries[spec.name] = entry
            return
        if existing.spec.override and not spec.override:
            log.warning("part %s/%s from %s overrides the one from %s", spec.stage, spec.name, existing.provider,
                        entry.provider)
            return
        raise PluginError(
            f'Two distributions register the {spec.stage} part "{spec.name}": {existing.provider} '
            f"({existing.origin.describe()}) and {entry.provider} ({entry.origin.describe()}). Uninstall one, "
            f"disable one with -p no:ENTRY_POINT, or mark the intended replacement with PartSpec(override=True)."
        )

    def stages(self) -> dict[str, dict[str, CatalogEntry]]:
        return self._entries

    def names(self, stage: str) -> list[str]:
        return sorted(self._entries[stage])

    def get(self, stage: str, name: str) -> CatalogEntry:
        """The part ``name`` of ``stage``; an unknown name raises a message with the stage's names and a suggestion."""
        try:
            return self._entries[stage][name]
        except KeyError:
            raise PluginError(unknown_part_message(stage, name, self.names(stage))) from None

    def find(self, name: str) -> list[CatalogEntry]:
        """Every part called ``name`` (``STAGE/NAME`` selects one stage)."""
        if "/" in name:
            stage, _, part = name.partition("/")
            if stage not in self._entries:
                raise PluginError(f"unknown stage {stage!r}; stages are: {', '.join(STAGES)}")
            return [self.get(stage, part)]
        return [entries[name] for entries in self._entries.values() if name in entries]


def unknown_part_message(stage: str, name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f' Did you mean "{close[0]}"?' if close else ""
    listed = ", ".join(names) if names else "(none registered)"
    return f'unknown {stage} part "{name}".{hint} Registered {stage} parts: {listed}.'
