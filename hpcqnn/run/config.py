"""The validated TOML configuration of ``hpcqnn train CONFIG [--set section.key=value ...]``.

One frozen dataclass per section holds the keys, their types and defaults; each field's
``metadata["rule"]`` holds its allowed values. A single generic pass driven by those fields checks
every key read from the file or from a ``--set`` override (unknown names, types, ranges), then
a few cross-field checks run, so a bad configuration fails in ``load_config``/``parse_config``,
before anything runs. TOML arrays are stored as tuples, so a ``Config`` is hashable and
immutable; ``config_dict`` turns it back into plain dicts and lists (for ``results.json``) and
``dump_config`` into TOML text that parses back to an equal ``Config``.
"""

from __future__ import annotations

import math
import operator
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn, get_args, get_origin, get_type_hints

from hpcqnn.errors import ConfigError
from hpcqnn.execution.devices import DEVICES
from hpcqnn.options import ANSATZES, ENTANGLERS, FEATURE_MAPS, INITS, MODES, READOUTS, SCHEDULES, SHOT_ALLOCATIONS
from hpcqnn.training.data import DATASETS as _DATASETS  # name -> (classes, raw features): limits of [data]

_COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class _Rule:
    """Allowed values of one key; bounds apply to each item of an array."""

    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    length: int | None = None
    distinct: bool = False
    pattern: str = ""  # a regular expression the whole text must match
    pattern_meaning: str = ""  # what ``pattern`` asks for, in words


    def problem(self, name: str, value: Any) -> str | None:
        """What is wrong with the (already type-checked) ``value`` of ``name``, or None."""
        if isinstance(value, tuple):
            if self.length is not None and len(value) != self.length:
                return f"{name} must have exactly {self.length} items, got {len(value)}: {_show(value)}"
            if self.distinct and len(set(value)) != len(value):
                return f"{name} must hold distinct values, got {_show(value)}"
            return next((p for i, v in enumerate(value) if (p := self.problem(f"{name}[{i}]", v))), None)
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"{name} must be {self.pattern_meaning}, got {_show(value)}"
        if self.choices and value not in self.choices:
            return f"{name} must be one of {', '.join(map(_show, self.choices))}; got {_show(value)}"
        bounds = [(op, b) for op, b in zip(_COMPARISONS, (self.ge, self.gt, self.le, self.lt)) if b is not None]
        if not all(_COMPARISONS[op](value, b) for op, b in bounds):
            allowed = " and ".join(f"{op} {b:g}" for op, b in bounds)
            return f"{name} must be {allowed}, got {_show(value)}"
        return None


def _key(default: Any, **rule: Any) -> Any:
    """A dataclass field with a default and the ``_Rule`` its values must satisfy."""
    return field(default=default, metadata={"rule": _Rule(**rule)})


@dataclass(frozen=True)
class RunConfig:
    """[run]: the run's name and the seed of every random choice."""

    name: str = _key(
        "run",
        # it names the run directory runs/<name>-<time>: nothing that leads elsewhere
        pattern=r"(?!\.\.?$)[^/\\\x00-\x1f\x7f]+",
        pattern_meaning="a plain name (not empty, no / or \\, not . or .., no control characters)",
    )
    seed: int = _key(1234, ge=0)


@dataclass(frozen=True)
class DataConfig:
    """[data]: which two classes of which dataset, with how many features (= qubits)."""

    dataset: str = _key("iris", choices=tuple(_DATASETS))
    classes: tuple[int, ...] = _key((1, 2), length=2, distinct=True, ge=0)
    features: int = _key(4, ge=2)
    test_fraction: float = _key(0.2, gt=0, lt=1)
    path: str = _key("")
    max_train: int = _key(0, ge=0)


@dataclass(frozen=True)
class ModelConfig:
    """[model]: the ansatz depth, the number of cuts between neighbouring pieces, the rotation
    gates per layer, the pieces (blocks of qubits, the partitions when cutting), the feature map,
    ansatz, entangler across pieces, readout and initialisation (``training.circuits``), or a
    user's ``builder`` ("package.module:function") in their place."""

    layers: int = _key(3, ge=1)
    cuts: int = _key(0, ge=0)
    rotations: str = _key("ryrz", choices=("ry", "ryrz"))
    pieces: int = _key(2, ge=2, le=26)
    feature_map: str = _key("ry", choices=FEATURE_MAPS)
    ansatz: str = _key("ladder", choices=ANSATZES)
    entangler: str = _key("cx", choices=ENTANGLERS)
    readout: str = _key("parity", choices=READOUTS)
    readout_terms: tuple[str, ...] = _key(())
    readout_weights: tuple[float, ...] = _key(())
    init: str = _key("uniform", choices=INITS)
    builder: str = _key("")


@dataclass(frozen=True)
class ExecutionConfig:
    """[execution]: how estimator queries run (mode, device, MPI schedule, injected stragglers)."""

    cutting: bool = _key(True)  # false: the same circuit run uncut, the baseline of its cut setting
    mode: str = _key("exact", choices=MODES)
    shots: int = _key(1000, gt=0)
    shot_allocation: str = _key("proportional", choices=SHOT_ALLOCATIONS)
    device: str = _key("auto", choices=DEVICES)
    schedule: str = _key("static", choices=SCHEDULES)
    threads: int = _key(0, ge=0)
    root_computes: bool = _key(True)
    straggler_ranks: tuple[int, ...] = _key((), ge=0)
    straggler_probability: float = _key(0.0, ge=0, le=1)
    straggler_delay: float = _key(0.0, ge=0)
    straggler_slowdown: float = _key(1.0, ge=1)


@dataclass(frozen=True)
class NoiseConfig:
    """[execution.noise]: device noise for every subexperiment (``hpcqnn.noise``): a fake device
    (``backend``, its noise unless depolarizing rates or a sampler are given), depolarizing rates
    ``p1`` (after sx and x), ``p2`` (after cx) and a ``readout`` bit flip, or a ``sampler``
    factory ("package.module:function" returning a SamplerV2, sampled mode)."""

    backend: str = _key("")
    p1: float = _key(0.0, ge=0, le=1)
    p2: float = _key(0.0, ge=0, le=1)
    readout: float = _key(0.0, ge=0, le=0.5)
    sampler: str = _key("")

    @property
    def depolarizing(self) -> bool:
        return bool(self.p1 or self.p2 or self.readout)


@dataclass(frozen=True)
class TrainingConfig:
    """[training]: optimizer and its step sizes, epochs and batch size."""

    optimizer: str = _key("adam", choices=("adam", "spsa"))
    epochs: int = _key(10, ge=1)
    batch_size: int = _key(16, ge=1)
    learning_rate: float = _key(0.05, gt=0)
    spsa_perturbation: float = _key(0.1, gt=0)


@dataclass(frozen=True)
class EvaluationConfig:
    """[evaluation]: Gaussian-noise and FGSM robustness sweeps of the trained model."""

    gaussian_sigmas: tuple[float, ...] = _key((0.05, 0.1, 0.2, 0.3), ge=0)
    gaussian_draws: int = _key(5, ge=1)
    fgsm_epsilons: tuple[float, ...] = _key((0.05, 0.1, 0.2), ge=0)


@dataclass(frozen=True)
class Config:
    """The whole configuration, one attribute per TOML section."""

    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    execution: ExecutionConfig = ExecutionConfig()
    noise: NoiseConfig = NoiseConfig()  # [execution.noise]
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()


#: Config attributes written as TOML subtables of another section.
_SUBTABLES = {"noise": "execution.noise"}
_SECTIONS: dict[str, type] = {_SUBTABLES.get(name, name): cls for name, cls in get_type_hints(Config).items()}
_ATTRIBUTES = {toml: name for name, toml in _SUBTABLES.items()}
_HINTS: dict[type, dict[str, Any]] = {cls: get_type_hints(cls) for cls in _SECTIONS.values()}
_TOML_TYPES = {str: "string", int: "integer", float: "float", bool: "boolean", list: "array", dict: "table"}

# (section, key) -> (raw value, where it came from: the file's name or the --set override)
_Values = dict[tuple[str, str], tuple[Any, str]]


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read and validate the TOML file at ``path`` (None: all defaults), then apply ``overrides``;
    a file (or its overrides) must set ``run.name``, what identifies the job."""
    if path is None:
        return parse_config("", overrides, source="<defaults>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    return parse_config(text, overrides, source=str(path), required=("run.name",))


def parse_config(
    text: str, overrides: Sequence[str] = (), source: str = "<string>", required: Sequence[str] = ()
) -> Config:
    """Validate TOML ``text`` plus ``section.key=value`` ``overrides``; ``source`` names the text in
    errors; every ``section.key`` of ``required`` must be set by one of them (no default)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    values: _Values = {}
    tables = list(document.items())
    while tables:
        section, table = tables.pop(0)
        _check_name(section, None, source)
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table, got {_found(table)}")
        for key, value in table.items():
            if isinstance(value, dict) and f"{section}.{key}" in _SECTIONS:  # [execution.noise]
                tables.append((f"{section}.{key}", value))
                continue
            _check_name(section, key, source)
            values[section, key] = (value, source)
    for item in overrides:
        section, key, value = _parse_override(item)
        values[section, key] = (value, f"--set {item}")
    config = _build(values, source)
    missing = [key for key in required if tuple(key.split(".", 1)) not in values]
    if missing:
        raise ConfigError(
            f"{source}: the config sets no {', '.join(missing)}: a job must say what it is (e.g. "
            '[run] name = "...", or --set run.name=...); an empty or partial file starts no default run'
        )
    return config


def dump_config(config: Config) -> str:
    """TOML text of ``config``, every key written; ``parse_config(dump_config(c)) == c``."""
    blocks = []
    for section, table in config_dict(config).items():
        lines = [f"[{section}]"] + [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def config_differences(saved: str, current: str) -> list[str]:
    """The keys whose values differ between two resolved configs' TOML texts, as
    ``section.key = saved value -> current value`` (``(absent)`` for a missing key). A saved
    config is read with today's defaults first, so a section or key added since it was written
    (e.g. ``[execution.noise]``) counts as its default."""
    try:
        saved = dump_config(parse_config(saved))
    except ConfigError:  # written by another version: compared as it is
        pass
    old, new = _flat(tomllib.loads(saved)), _flat(tomllib.loads(current))
    changes = []
    for section in sorted(old.keys() | new.keys()):
        before, after = old.get(section, {}), new.get(section, {})
        for key in sorted(before.keys() | after.keys()):
            if before.get(key, ...) != after.get(key, ...):
                shown = [_show(t[key]) if key in t else "(absent)" for t in (before, after)]
                changes.append(f"{section}.{key} = {shown[0]} -> {shown[1]}")
    return changes


def _flat(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A TOML document's tables by name, subtables (``[execution.noise]``) as their own."""
    tables: dict[str, dict[str, Any]] = {}
    for section, table in document.items():
        tables[section] = {}
        for key, value in table.items():
            if isinstance(value, dict):
                tables.update(_flat({f"{section}.{key}": value}))
            else:
                tables[section][key] = value
    return tables


def config_dict(config: Config) -> dict[str, dict[str, Any]]:
    """``config`` as nested plain dicts, arrays as lists (JSON-ready, e.g. for results.json)."""
    return {
        _SUBTABLES.get(s.name, s.name): {
            f.name: list(v) if isinstance(v := getattr(getattr(config, s.name), f.name), tuple) else v
            for f in fields(getattr(config, s.name))
        }
        for s in fields(config)
    }


def _check_name(section: str, key: str | None, where: str) -> None:
    """Raise unless ``section`` (and ``key`` in it, when given) exists in the schema."""
    if section not in _SECTIONS:
        raise ConfigError(f"{where}: unknown section [{section}]; valid sections: {', '.join(_SECTIONS)}")
    valid = [f.name for f in fields(_SECTIONS[section])]
    if key is not None and key not in valid:
        raise ConfigError(f"{where}: unknown key {section}.{key}; valid keys of [{section}]: {', '.join(valid)}")


def _parse_override(item: str) -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is read as TOML, or else kept as the bare string."""
    target, equals, text = item.partition("=")
    section, dot, key = (part.strip() for part in target.rpartition("."))
    if not (equals and dot and section and key):
        raise ConfigError(f"--set {item}: an override must look like section.key=value")
    _check_name(section, key, f"--set {item}")
    text = text.strip()
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return section, key, text
    return section, key, parsed["value"] if parsed.keys() == {"value"} else text


def _build(values: _Values, source: str) -> Config:
    """Type-check and range-check every given value, fill in defaults, then run cross-field checks."""
    sections = {}
    for section, cls in _SECTIONS.items():
        given = {}
        for f in fields(cls):
            if (section, f.name) in values:
                raw, where = values[section, f.name]
                name = f"{section}.{f.name}"
                value = _coerce(name, _HINTS[cls][f.name], raw, where)
                if problem := f.metadata["rule"].problem(name, value):
                    raise ConfigError(f"{where}: {problem}")
                given[f.name] = value
        sections[_ATTRIBUTES.get(section, section)] = cls(**given)
    config = Config(**sections)
    _check_consistency(config, values, source)
    return config


def _coerce(name: str, hint: Any, value: Any, where: str) -> Any:
    """``value`` as type ``hint`` (arrays become tuples, integers floats); raise on any other type."""
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        if type(value) is not list:
            raise ConfigError(f"{where}: {name} must be an array of {_TOML_TYPES[item]}s, got {_found(value)}")
        return tuple(_coerce(f"{name}[{i}]", item, v, where) for i, v in enumerate(value))
    if hint is float and type(value) is int:
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {name} is too large for a float, got {value}") from None
    if type(value) is not hint:
        raise ConfigError(f"{where}: {name} must be {_a(_TOML_TYPES[hint])}, got {_found(value)}")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be a finite float, got {_show(value)}")
    return value


def _check_consistency(config: Config, values: _Values, source: str) -> None:
    """Checks that involve more than one key; errors name the file or the override that set them."""

    def fail(keys: tuple[str, ...], message: str) -> NoReturn:
        given = [values[s, k][1] for s, _, k in (key.rpartition(".") for key in keys) if (s, k) in values]
        raise ConfigError(f"{given[0] if given else source}: {message}")

    data, model, noise = config.data, config.model, config.noise
    if noise.sampler and config.execution.mode != "sampled":
        fail(("execution.noise.sampler", "execution.mode"), 'execution.noise.sampler runs shots: it needs '
             f'execution.mode = "sampled", got {_show(config.execution.mode)}')
    if noise.sampler and noise.depolarizing:
        fail(("execution.noise.sampler",), "execution.noise.sampler brings its device's noise: leave out p1, p2 "
             "and readout")
    n_classes, raw_features = _DATASETS[data.dataset]
    if model.cuts > model.layers:
        fail(("model.cuts", "model.layers"), "model.cuts must be <= model.layers (at most one cut per layer), "
             f"got cuts = {model.cuts}, layers = {model.layers}")
    if model.pieces > data.features:
        fail(("model.pieces", "data.features"), "model.pieces must be <= data.features (one qubit per "
             f"feature, at least one qubit per piece), got pieces = {model.pieces}, features = {data.features}")
    if (model.readout == "terms") != bool(model.readout_terms):
        fail(("model.readout", "model.readout_terms"), 'model.readout_terms (Pauli labels) go with model.readout = '
             f'"terms", and that needs them; got readout = {_show(model.readout)}, {len(model.readout_terms)} terms')
    if model.readout_weights and len(model.readout_weights) != len(model.readout_terms):
        fail(("model.readout_weights",), f"model.readout_weights must give one weight per readout term "
             f"({len(model.readout_terms)}), got {len(model.readout_weights)}")
    for label in model.readout_terms:
        if len(label) != data.features or set(label) - set("IXYZ"):
            fail(("model.readout_terms",), f"model.readout_terms must be Pauli labels of data.features = "
                 f"{data.features} letters I, X, Y, Z, got {_show(label)}")
    if model.init == "identity_blocks" and not model.builder and model.layers < max(2, 2 * model.cuts):
        fail(("model.init", "model.layers", "model.cuts"), 'model.init = "identity_blocks" mirrors each layer in the '
             f"next, with a cut after each pair: model.layers must be >= 2 and >= 2 * model.cuts, got layers = "
             f"{model.layers}, cuts = {model.cuts}")
    if model.builder and model.init == "identity_blocks":
        fail(("model.init", "model.builder"), 'model.init = "identity_blocks" needs the built-in model '
             "(mirrored layers), not model.builder")
    if data.dataset == "mnist" and not data.path:
        fail(("data.dataset", "data.path"),
             'data.path must name the MNIST directory or .npz file when data.dataset = "mnist"')
    if max(data.classes) >= n_classes:
        fail(("data.classes", "data.dataset"), f"data.classes must be labels from 0 to {n_classes - 1} "
             f"for data.dataset = {_show(data.dataset)}, got {_show(data.classes)}")
    if data.features > raw_features:
        fail(("data.features", "data.dataset"), f"data.features must be <= {raw_features} "
             f"(the raw feature count of {data.dataset}), got {data.features}")


def _toml_value(value: Any) -> str:
    """``value`` (string, boolean, integer, finite float or array of them) as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
        return '"' + "".join(
            escapes.get(c, f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in value
        ) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _show(value: Any) -> str:
    """``value`` as the user would write it in TOML, or its repr."""
    try:
        return _toml_value(value)
    except TypeError:
        return repr(value)


def _a(noun: str) -> str:
    """``noun`` with its indefinite article."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _found(value: Any) -> str:
    """``value`` with its TOML type name, for "got ..." in error messages."""
    return f"{_TOML_TYPES.get(type(value), type(value).__name__)} {_show(value)}"
