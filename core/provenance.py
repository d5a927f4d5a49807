"""Where each part of a run came from: ``provenance.json`` in the run directory records, for every part the run built
(nested ones included), the distribution and version that provided it, its entry point, and whether it overrides a
part of the same name. ``--resume``, ``evaluate`` and ``generate`` compare it with what is installed: a part whose
distribution is gone is an error that says what to install; another version or another provider is a warning.
"""

from __future__ import annotations

import json
from pathlib import Path

FILE = "provenance.json"


def entry_record(stage: str, name: str, entry) -> dict:
    """What ``provenance.json`` keeps of one part (``entry``: its registry CatalogEntry)."""
    origin = entry.origin
    return {"stage": stage, "name": name, "distribution": origin.distribution, "version": origin.version,
            "entry_point": origin.entry_point, "override": entry.spec.override}


def read(run_dir: Path) -> dict:
    """The run's recorded provenance, {section: record}; empty for a run made before it was recorded, or when the
    file is unreadable (provenance explains errors, it never causes them)."""
    try:
        return json.loads((Path(run_dir) / FILE).read_text(encoding="utf-8"))["parts"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def install_hint(record: dict) -> str:
    """How to get back the part of ``record``: for a missing part's error message."""
    return (f'the run was made with the {record["stage"]} part "{record["name"]}" from {record["distribution"]} '
            f'{record["version"]} (provenance.json): install it, e.g. pip install '
            f'"{record["distribution"]}=={record["version"]}"')


def changes(saved: dict, built: dict) -> list[str]:
    """Readable differences between the recorded provenance and the parts resolved now (same sections)."""
    notes = []
    for section, now in built.items():
        then = saved.get(section)
        if then is None or then["name"] != now["name"]:
            continue
        if then["distribution"] != now["distribution"]:
            notes.append(f'{section}: part "{now["name"]}" was provided by {then["distribution"]} {then["version"]}, '
                         f'now by {now["distribution"]} {now["version"]}')
        elif then["version"] != now["version"]:
            notes.append(f'{section}: part "{now["name"]}" was made with {then["distribution"]} {then["version"]}, '
                         f'now {now["version"]} is installed')
    return notes
