"""Typed model hyperparameters, checked when the config is read (before any job runs).

A model's ``Params`` is a dataclass; each field's annotation is its type: ``int``, ``float``, ``bool``, ``str``,
``Literal[...]`` for choices, ``X | None`` where null is allowed, ``Any`` for settings the model checks itself.
Bounds go in the field's metadata (``field(default=5, metadata={"ge": 1})``; keys ``ge``, ``gt``, ``le``, ``lt``).
Every message names ``model_params.<model>.<field>``, the value and the fix.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from pertpipe.errors import ConfigError

_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


def _fits(value: Any, tp: Any) -> tuple[bool, str]:
    """(whether ``value`` fits annotation ``tp``, what the annotation asks for in words)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, "anything"
    if origin is Literal:
        choices = list(typing.get_args(tp))
        return value in choices, f"one of {choices}"
    if origin in (typing.Union, types.UnionType):
        parts = [_fits(value, a) for a in typing.get_args(tp)]
        return any(ok for ok, _ in parts), " or ".join(w for _, w in parts)
    if tp is type(None):
        return value is None, "null"
    if tp is bool:
        return isinstance(value, bool), "true or false"
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    if tp is str:
        return isinstance(value, str), "a string"
    return True, str(tp)


def check_params(model: str, params_cls: type, values: dict[str, Any], *, where: str | None = None) -> None:
    """Raise :class:`ConfigError` for unknown keys, wrong types, choices outside a Literal, or bounds.

    Messages name ``<where>.<field>`` (default ``model_params.<model>``; the spatial branch passes ``spatial.model``).
    """
    where = where or f"model_params.{model}"
    known = {f.name: f for f in fields(params_cls)}
    bad = sorted(set(values) - set(known))
    if bad:
        raise ConfigError(f"config {where}: unknown hyperparameter(s) {bad}. Fix: use {sorted(known)}")
    hints = typing.get_type_hints(params_cls)
    for name, value in values.items():
        ok, wanted = _fits(value, hints.get(name, Any))
        if not ok:
            from pertpipe.config_check import text_number

            if text_number(value, ["integer", "number", "boolean"]):
                raise ConfigError(f"{where}.{name} is the text {value!r} (values nested in --config arrive as "
                                  f"strings). Fix: use {wanted} in a YAML file passed with --configfile")
            raise ConfigError(f"{where}.{name} is {value!r}. Fix: use {wanted}")
        for key, bound in known[name].metadata.items():
            if key in _BOUNDS and value is not None and not _BOUNDS[key][0](value, bound):
                raise ConfigError(f"{where}.{name} is {value!r}. Fix: use a value {_BOUNDS[key][1]} {bound}")


def positive(default: Any) -> Any:
    """A dataclass field that must be >= 1 (counts, sizes, epochs)."""
    from dataclasses import field

    return field(default=default, metadata={"ge": 1})


def fraction(default: float) -> Any:
    """A dataclass field in [0, 1)."""
    from dataclasses import field

    return field(default=default, metadata={"ge": 0.0, "lt": 1.0})


@dataclass
class TrainingParams:
    """The shared training loop's settings (:class:`pertpipe.core.training.TrainConfig` reads the fields of the
    same name), inherited by every model trained with it; a model redeclares a field to change its default."""

    lr: float = field(default=1e-3, metadata={"gt": 0})
    weight_decay: float = field(default=1e-4, metadata={"ge": 0})
    warmup_epochs: int = field(default=2, metadata={"ge": 0})
    patience: int = positive(10)  # epochs without a better validation score before stopping
    checkpoint_every: int = positive(1)
    amp: bool = True  # bfloat16 autocast on CUDA
    val_fraction: float = fraction(0.15)  # training targets held out for early stopping (and shrinkage)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpu: bool = False  # request a GPU from the scheduler (Snakemake resources)
