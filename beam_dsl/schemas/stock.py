"""The snapshot of Beam YAML's stock transforms that lint checks configs against.

``beam_yaml_transforms.json`` beside this file lists every transform type
Beam YAML's standard providers offer and, where Beam can tell without
starting an expansion service, the config keys each takes and which are
required: read from the Python constructor of inline providers (through the
key renaming of ``RenamingProvider``, as ``ReadFromCsv``'s ``delimiter`` is
pandas' ``sep``). Transforms served by Java expansion services are listed
with ``null``: lint knows their names only. ``MapToFields``, ``Filter`` and
``Combine`` fold their ``-language`` variants (the keys of any variant).

Regenerate after upgrading Beam (tests/test_stock_schema.py fails until the
snapshot matches the installed Beam)::

    python -m beam_dsl.schemas.stock --write

Only this generator imports Beam; lint reads the JSON.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from typing import Any

SNAPSHOT = os.path.join(os.path.dirname(__file__), "beam_yaml_transforms.json")


def _inline_params(factory: Any) -> dict[str, bool] | None:
    """Constructor parameter -> required, or None where it takes **kwargs."""
    target = factory.__init__ if isinstance(factory, type) else factory
    params: dict[str, bool] = {}
    for name, p in inspect.signature(target).parameters.items():
        if name == "self" or p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            return None
        params[name] = p.default is inspect.Parameter.empty
    return params


def _describe(provider: Any, name: str) -> dict[str, list[str]] | None:
    """The keys and required keys of ``name`` as ``provider`` offers it, or None."""
    mapping = None
    if type(provider).__name__ == "RenamingProvider":
        mapping = provider._mappings[name]
        name, provider = provider._transforms[name], provider._underlying_provider
    if type(provider).__name__ != "InlineProvider":
        return None
    factory = provider._transform_factories[name]
    target = factory.__init__ if isinstance(factory, type) else factory
    if mapping is not None:  # the renamed keys are all a user may write
        signature = inspect.signature(target).parameters
        required = [
            key for key, inner in mapping.items()
            if inner in signature and signature[inner].default is inspect.Parameter.empty
        ]
        return {"keys": sorted(mapping), "required": sorted(required)}
    params = _inline_params(factory)
    if params is None:
        return None
    return {"keys": sorted(params), "required": sorted(k for k, r in params.items() if r)}


def generate() -> dict[str, Any]:
    """The snapshot, from the installed Beam."""
    import apache_beam
    from apache_beam.yaml import yaml_provider

    variants: dict[str, list[dict[str, list[str]] | None]] = {}
    for full_name, providers in sorted(yaml_provider.standard_providers().items()):
        name = full_name.split("-")[0]
        variants.setdefault(name, []).append(_describe(providers[0], full_name))
    found: dict[str, dict[str, list[str]] | None] = {}
    for name, schemas in variants.items():
        known = [s for s in schemas if s is not None]
        if len(schemas) == 1 or not known:
            found[name] = schemas[0] if len(schemas) == 1 else None
            continue
        # MapToFields-python, -sql, ...: the keys of any variant Python can describe
        found[name] = {
            "keys": sorted({"language", *(k for s in known for k in s["keys"])}),
            "required": sorted(set.intersection(*(set(s["required"]) for s in known))),
        }
    return {
        "generated_from": f"apache_beam.yaml.yaml_provider.standard_providers() of "
        f"apache-beam {apache_beam.__version__} (python -m beam_dsl.schemas.stock --write)",
        "transforms": found,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {SNAPSHOT}")
    args = parser.parse_args(argv)
    text = json.dumps(generate(), indent=1, sort_keys=True) + "\n"
    if args.write:
        with open(SNAPSHOT, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
