"""Parsing the comparison's command-line strings: method lists and settings."""

import dataclasses
import re

from aradals_tf.experiments.config import METHODS
from aradals_tf.experiments.config import TrainConfig


def parse_methods(text):
    """`"vanilla,ar-adals,independent=ar-adals"` -> `[(label, method), ...]`.

    A `LABEL=METHOD` entry adds a variant of a method with its own settings
    (`--set independent.ensemble_mode=independent`) and its own table row.
    """
    entries = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        label, _, method = item.rpartition("=")
        label = label or method
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; valid: {', '.join(METHODS)}.")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", label):
            raise ValueError(f"Method label {label!r} may hold only letters, digits, '_' and '-'.")
        entries.append((label, method))
    labels = [label for label, _ in entries]
    if not entries or len(set(labels)) != len(labels):
        raise ValueError(f"--methods needs distinct labels; got {text!r}.")
    return entries


def parse_override(text, labels=METHODS):
    """`"ar-adals.alpha=0.5,1"` -> `("ar-adals", "alpha", [0.5, 1.0])`.

    The method (or method label) part is optional (`"epochs=10"` applies to
    every method); values are cast to the `TrainConfig` field's type.
    """
    if "=" not in text:
        raise ValueError(f"Expected [METHOD.]PARAM=VALUE[,VALUE...]; got {text!r}.")
    key, _, values = text.partition("=")
    method, _, param = key.rpartition(".")
    method = method or None
    if method is not None and method not in labels:
        raise ValueError(f"Unknown method {method!r} in {text!r}; valid: {', '.join(labels)}.")
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    param = param.replace("-", "_")
    if param not in fields or param in ("method", "seed", "dataset"):
        valid = sorted(set(fields) - {"method", "seed", "dataset"})
        raise ValueError(f"Unknown setting {param!r} in {text!r}; valid: {', '.join(valid)}.")
    default = getattr(TrainConfig(), param)
    cast = type(default) if default is not None else float
    if param in ("backbone", "data_dir"):
        cast = str
    try:
        parsed = [cast(value) for value in values.split(",") if value != ""]
    except ValueError:
        raise ValueError(f"Cannot read the values of {text!r} as {cast.__name__}.") from None
    if not parsed:
        raise ValueError(f"No value given in {text!r}.")
    return method, param, parsed


def parse_grids_and_sets(grids, sets, labels):
    """`--grid` and `--set` strings -> `(grids, overrides)` for `run_comparison`.

    Args:
        grids: `"METHOD.PARAM=V1,V2"` strings (a method is required).
        sets: `"[METHOD.]PARAM=VALUE"` strings (one value each).
        labels: the comparison's method labels.

    Returns:
        `({method: {param: [values]}}, {method or None: {param: value}})`.
    """
    grid_map, override_map = {}, {}
    for text in grids:
        method, param, values = parse_override(text, labels)
        if method is None:
            raise ValueError(f"--grid needs METHOD.PARAM=...; got {text!r}.")
        grid_map.setdefault(method, {})[param] = values
    for text in sets:
        method, param, values = parse_override(text, labels)
        if len(values) != 1:
            raise ValueError(f"--set takes one value; use --grid for several ({text!r}).")
        override_map.setdefault(method, {})[param] = values[0]
    return grid_map, override_map


def parse_seeds(text):
    """`"0,1,2"` -> `[0, 1, 2]`."""
    try:
        return [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise ValueError(f"Expected comma-separated integer seeds; got {text!r}.") from None
