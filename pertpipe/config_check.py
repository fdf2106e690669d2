"""The configuration checked against ``schemas/config.schema.yaml`` with one line per problem (before Snakemake's
own validation, which fills the defaults but prints the whole schema around a failure).

Each message names the key path, the value, and the fix: for an unknown key the closest valid one, for a number
or boolean that arrived as text (values nested in ``--config`` are strings) the ``--configfile`` way, for a name
that could leave ``results/`` (``/``, ``..``) the characters allowed.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

from pertpipe.errors import ConfigError

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # model, alias and dataset names: they become folder names


def _where(path: list[Any]) -> str:
    return "config " + ".".join(str(p) for p in path) if path else "config"


def text_number(value: Any, wanted: Any) -> bool:
    """A string that YAML would read as the number/boolean the schema wants: a nested --config value."""
    import yaml

    if not isinstance(value, str):
        return False
    wanted = set(wanted if isinstance(wanted, list) else [wanted])
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return False
    kinds = {"integer": int, "number": (int, float), "boolean": bool}
    return any(k in wanted and isinstance(parsed, kinds[k]) for k in kinds)


def explain(error: Any) -> str:
    """One line for a jsonschema ValidationError."""
    path, where, value = list(error.absolute_path), _where(list(error.absolute_path)), error.instance
    if error.validator == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(k for k in value if k not in allowed)
        key = extra[0] if extra else "?"
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(allowed)}"
        return f"{where}: unknown key '{key}'. Fix: {hint}"
    if error.validator == "type" and text_number(value, error.validator_value):
        kind = error.validator_value if isinstance(error.validator_value, str) else "/".join(error.validator_value)
        article = "an" if kind[0] in "aeiou" else "a"
        return (f"{where} is the text {value!r}, not {article} {kind}: values nested in --config arrive as "
                f"strings. Fix: put it in a YAML file and pass --configfile FILE (e.g. {path[0]}: ...), or set a "
                "top-level key with --config")
    if error.validator == "pattern" or (error.validator == "propertyNames"):
        return (f"{where}: {value!r} is not a safe name (it becomes a folder name under results/). Fix: start with a "
                "letter or digit and use letters, digits, '_', '.' and '-' only (names starting with '.' or '_' are "
                "the pipeline's own folders and rows)")
    if error.validator == "minItems" and path == ["models"]:
        return "config models is empty: nothing would be trained or scored. Fix: list at least one model (e.g. " \
               "models: [cell_mean, linear])"
    desc = (error.schema.get("description") or "").strip().split(". ")[0]
    return f"{where}: {error.message}. Fix: see schemas/config.schema.yaml" + (f" ({desc})" if desc else "")


def check_config(config: dict[str, Any], schema_path: str | os.PathLike) -> None:
    """Raise :class:`ConfigError` with one line naming the first problem (by key path) of ``config``."""
    import jsonschema
    import yaml

    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = list(validator.iter_errors(config))
    if not errors:
        return
    err = min(errors, key=lambda e: (list(map(str, e.absolute_path)), e.validator != "additionalProperties"))
    if err.validator in ("anyOf", "oneOf") and err.context:  # the branch that got furthest says most
        err = max(err.context, key=lambda e: len(e.absolute_path))
    raise ConfigError(explain(err))


def check_row_names(models: list[str], raw_rows: dict[str, str]) -> None:
    """A configured model or alias may not take the name of a row the pipeline makes itself: ``<model>_raw`` is the
    raw (λ = 1) row of shrunk model ``<model>`` (``raw_rows``: row -> model), scored from that model's file."""
    for name in models:
        if name in raw_rows:
            raise ConfigError(f"config models: '{name}' is the name of the raw (λ = 1) row the pipeline scores for the "
                              f"shrunk model '{raw_rows[name]}' (from {raw_rows[name]}'s model.pt), so the row would "
                              f"not be the model you configured. Fix: rename the alias (e.g. '{name}_alias')")


def check_output_folders(folders: list[str]) -> None:
    """Each folder a run writes into must be a folder (or not exist yet) under folders it can write: a file where a
    folder belongs, or a folder it cannot write, is one line naming it before any job starts (Snakemake would stop
    in its own output removal with a traceback)."""
    seen: set[str] = set()
    for folder in folders:
        path = os.path.normpath(folder)
        parts = []
        while path and path not in seen:
            parts.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for p in reversed(parts):
            seen.add(p)
            if os.path.lexists(p) and not os.path.isdir(p):
                raise ConfigError(f"{p} is a file, but the run writes into a folder of that name. Fix: move or "
                                  "delete the file (or set results: to another folder)")
            if os.path.isdir(p) and p in (os.path.normpath(f) for f in folders) and not os.access(p, os.W_OK | os.X_OK):
                raise ConfigError(f"{p}: permission denied: the run cannot write into this folder. Fix: make it "
                                  "writable (chmod u+w), or set results: to a folder you can write")
