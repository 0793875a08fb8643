"""Reading and writing the YAML input files of sirtreg: cohort manifests and patient plans.

The machinery shared by :mod:`sirtreg.study.manifest` and :mod:`sirtreg.pipeline.plan`:
a safe loader that reports repeated keys, a :class:`Reader` that collects every problem
of a document (unknown keys with the nearest known one, missing keys, bad paths, ids,
choices and numbers) instead of stopping at the first, the one error that lists them,
and an atomic YAML writer. Each problem is one line, ``"<where>: <what>"``.

The loader is bounded, so that no file can make sirtreg spend minutes or all its memory (a YAML
"billion laughs"): a file is at most :data:`MAX_FILE_BYTES`, holds at most :data:`MAX_ALIASES`
aliases (``*name``) and no alias that refers to a collection holding it, its aliases add at most
:data:`MAX_ALIAS_VALUES` values when written out, and its collections nest at most :data:`MAX_DEPTH`
deep, aliases written out. Plans and manifests need no alias; anchors and merge keys (``<<: *name``)
stay allowed within these bounds.

Values a domain reads (activities, isotopes: :func:`~sirtreg.dosimetry.isotopes.read_activity_gbq`)
go through :meth:`Reader.parsed`, which records their refusals and logs their warnings. Fractions
(the lung shunt fraction) are finite and in [0, 1). ``.nan`` and ``.inf`` are YAML numbers: they are refused wherever
a number is read.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sirtreg.errors import InputError, describe
from sirtreg.io import prepare_output
from sirtreg.output_folder import write_atomically

MODALITIES = ("CT", "MR")
"""Modalities of a floating image."""

ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
"""What an id (of a patient, of a floating image) may hold: letters, digits, '.', '_' and '-'."""

MAX_FILE_BYTES = 1 << 20
"""Largest YAML input file, bytes (1 MiB; a plan or a manifest of hundreds of patients is far smaller)."""

MAX_ALIASES = 100
"""Most aliases (``*name``) in one YAML document."""

MAX_ALIAS_VALUES = 10_000
"""Most values (scalars and collections) that the aliases of one document may add when written out."""

MAX_DEPTH = 32
"""Deepest nesting of collections in a YAML document, aliases written out (a plan nests 5 deep)."""

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["ID_PATTERN", "MAX_ALIASES", "MAX_ALIAS_VALUES", "MAX_DEPTH", "MAX_FILE_BYTES",
           "MODALITIES", "Loader", "Reader", "YamlLimitError", "entry_label", "load_yaml", "refusal",
           "relative", "write_yaml"]


# --- reading -------------------------------------------------------------------------
class YamlLimitError(yaml.YAMLError):
    """A YAML document beyond the bounds of :class:`Loader` (size, aliases, nesting)."""


class Loader(yaml.SafeLoader):
    """A safe, bounded YAML loader that records keys repeated in one mapping (plain YAML keeps the last one).

    Refuses (:class:`YamlLimitError`, a :class:`yaml.YAMLError`) a text longer than :data:`MAX_FILE_BYTES`
    characters, more than :data:`MAX_ALIASES` aliases, an alias inside the collection it refers to, aliases
    that add more than :data:`MAX_ALIAS_VALUES` values, and nesting deeper than :data:`MAX_DEPTH`, before
    any object is built: a "billion laughs" is refused in milliseconds.

    Attributes
    ----------
    repeated : one problem line per repeated key, naming its line.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[str] = []
        self._length = len(stream)
        self._aliases = 0
        self._depth = 0

    def get_single_node(self) -> yaml.Node | None:
        if self._length > MAX_FILE_BYTES:
            raise YamlLimitError(f"it is longer than {MAX_FILE_BYTES} characters ({self._length})")
        node = super().get_single_node()
        if node is not None:
            _Expansion().measure(node, 1)
        return node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                line = self.peek_event().start_mark.line + 1
                raise YamlLimitError(f"line {line}: more than {MAX_ALIASES} aliases (*name); write the values out")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise YamlLimitError(f"line {line}: collections nest more than {MAX_DEPTH} deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    self.repeated.append(f"line {key_node.start_mark.line + 1}: key {key_node.value!r} is repeated")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


class _Expansion:
    """Measures a composed YAML document as if its aliases were written out, without writing them out.

    Each node is measured once (its height and size kept), so the time is linear in the file's length.
    """

    def __init__(self) -> None:
        self.measured: dict[int, tuple[int, int]] = {}  # id(node) -> (height, size), aliases written out
        self.open: set[int] = set()  # collections being measured: one met again holds an alias to itself
        self.added = 0  # values that aliases add when written out

    def measure(self, node: yaml.Node, depth: int) -> tuple[int, int]:
        """(height, size) of ``node`` found at ``depth`` (1: the document); :class:`YamlLimitError` past a bound.

        The height counts the levels of nodes in ``node`` (a scalar: 1), the size its nodes.
        """
        key = id(node)
        if key in self.open:
            raise YamlLimitError(f"line {node.start_mark.line + 1}: the collection anchored here holds an alias "
                                 "to itself")
        if depth > MAX_DEPTH:
            raise YamlLimitError(f"collections nest more than {MAX_DEPTH} deep once aliases (*name) are written out")
        if key in self.measured:  # met again: an alias
            height, size = self.measured[key]
            self.added += size
            if self.added > MAX_ALIAS_VALUES:
                raise YamlLimitError(f"aliases (*name) add more than {MAX_ALIAS_VALUES} values once written out "
                                     "(a 'billion laughs'?)")
        else:
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [item for pair in node.value for item in pair]
            else:
                children = []
            self.open.add(key)
            measured = [self.measure(child, depth + 1) for child in children]
            self.open.discard(key)
            height = 1 + max((h for h, _ in measured), default=0)
            size = 1 + sum(s for _, s in measured)
            self.measured[key] = (height, size)
        if depth + height - 1 > MAX_DEPTH:
            raise YamlLimitError(f"collections nest more than {MAX_DEPTH} deep once aliases (*name) are written out")
        return height, size


def load_yaml(path: Path, *, what: str) -> tuple[Any, list[str]]:
    """Parse a YAML file with :class:`Loader` (bounded: see the module docstring).

    Parameters
    ----------
    path : the file.
    what : what the file is, for the error message ("cohort manifest", "plan").

    Returns
    -------
    The parsed document and the repeated-key problems.

    Raises :class:`~sirtreg.errors.InputError` if there is no such file, if it cannot be read or parsed, or is
    beyond the bounds of :class:`Loader` (larger than :data:`MAX_FILE_BYTES`, too many aliases, nested too deep).
    """
    if not path.is_file():
        raise InputError(f"no such {what}: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"the {what} {path} is {size} bytes, more than {MAX_FILE_BYTES} (1 MiB): "
                             "is it the right file?")
        loader = Loader(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the {what} {path}: {exc}") from None
    try:
        return loader.get_single_data(), loader.repeated
    except YamlLimitError as exc:
        raise InputError(f"{path.name} is refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path.name} is not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


class Reader:
    """Parses a document, collecting every problem instead of stopping at the first.

    Each parsing method takes ``where`` (the place in the document, e.g. ``"patient P01, spect"``)
    and a value; it returns the parsed value, or None after adding a problem to :attr:`problems`.

    Parameters
    ----------
    folder : the folder of the file; relative paths resolve against it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problems: list[str] = []

    def problem(self, where: str, what: str) -> None:
        """Add the problem line ``"<where>: <what>"``."""
        self.problems.append(f"{where}: {what}")

    def fields(self, where: str, entry: Any, keys: Mapping[str, bool]) -> dict[str, Any] | None:
        """``entry`` if it is a mapping; reports unknown keys (with the nearest known one) and missing ones.

        Parameters
        ----------
        keys : the known keys, each True if required.

        Returns
        -------
        The entries of known keys, or None if ``entry`` is not a mapping.
        """
        if not isinstance(entry, dict):
            self.problem(where, f"must be a mapping of {', '.join(keys)}, got {describe(entry)}")
            return None
        for key in entry:
            if key not in keys:
                by_folded = {known.casefold(): known for known in keys}  # "wi" is close to "wI"
                close = difflib.get_close_matches(str(key).casefold(), list(by_folded), n=1)
                hint = f"did you mean {by_folded[close[0]]!r}?" if close else f"known keys: {', '.join(keys)}"
                self.problem(where, f"unknown key {key!r}; {hint}")
        for key, required in keys.items():
            if required and key not in entry:
                self.problem(where, f"missing {key!r}")
        return {k: v for k, v in entry.items() if k in keys}

    def get(self, where: str, fields: dict[str, Any], key: str, parse: Callable[[str, Any], Any],
            default: Any = None) -> Any:
        """``parse(where of the field, value)`` if ``key`` is present, else ``default``."""
        return parse(f"{where}, {key}", fields[key]) if key in fields else default

    def path(self, where: str, value: Any) -> Path | None:
        """An absolute path (relative ones against :attr:`folder`) that exists."""
        if not isinstance(value, str) or not value.strip():
            self.problem(where, f"must be a path, got {describe(value)}")
            return None
        path = Path(os.path.abspath(self.folder / value))
        if not path.exists():
            self.problem(where, f"no such file: {path}")
            return None
        return path

    def text(self, where: str, value: Any) -> str | None:
        """Free text."""
        if isinstance(value, str):
            return value
        self.problem(where, f"must be text, got {describe(value)}")
        return None

    def identifier(self, where: str, value: Any) -> str | None:
        """An id: text matching :data:`ID_PATTERN`."""
        if not isinstance(value, str):
            self.problem(where, f"must be text (quote it, e.g. '01'), got {describe(value)}")
            return None
        if not ID_PATTERN.fullmatch(value):
            self.problem(where, f"{value!r} may hold only letters, digits, '.', '_' and '-'")
            return None
        return value

    def choice(self, where: str, value: Any, allowed: tuple[str, ...]) -> str | None:
        """One of ``allowed``."""
        if value in allowed:
            return value
        self.problem(where, f"must be one of {', '.join(allowed)}, got {describe(value)}")
        return None

    def number(self, where: str, value: Any) -> float | None:
        """A finite number (not a boolean)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.problem(where, f"must be a finite number, got {describe(value)}")
            return None
        return float(value)

    def boolean(self, where: str, value: Any) -> bool | None:
        """true or false."""
        if isinstance(value, bool):
            return value
        self.problem(where, f"must be true or false, got {describe(value)}")
        return None

    def parsed(self, where: str, value: Any, parse: Callable[[Any], tuple[T, list[str]]]) -> T | None:
        """``parse(value)``'s value (e.g. an activity or an isotope, :mod:`sirtreg.dosimetry.isotopes`): its
        refusal (InputError) recorded as a problem of ``where``, its warnings logged there."""
        try:
            parsed, warnings = parse(value)
        except InputError as exc:
            self.problem(where, str(exc))
            return None
        for warning in warnings:
            log.warning("%s: %s", where, warning)
        return parsed

    def fraction(self, where: str, value: Any) -> float | None:
        """A finite number in [0, 1)."""
        fraction = self.number(where, value)
        if fraction is not None and not 0 <= fraction < 1:
            self.problem(where, f"must be in [0, 1), got {value!r}")
            return None
        return fraction


def entry_label(prefix: str, entry: Any, number: int) -> str:
    """``prefix`` and the entry's id if it has a textual one, else its position from 1 ("patient #3")."""
    if isinstance(entry, dict) and isinstance(entry.get("id"), str):
        return f"{prefix} {entry['id']}"
    return f"{prefix} #{number}"


def refusal(problems: list[str], *, what: str, prefix: str = "") -> InputError:
    """The one error that lists every problem of a file, one per line.

    Parameters
    ----------
    problems : the problem lines.
    what : what the file is ("cohort manifest", "plan").
    prefix : put before the count, e.g. the file name and ": ".
    """
    count = len(problems)
    return InputError(f"{prefix}{count} problem{'s' if count != 1 else ''} in the {what}:\n"
                      + "\n".join(f"  {problem}" for problem in problems))


# --- writing -------------------------------------------------------------------------
def relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` with '/' separators, or absolute where no relative path exists."""
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:
        return str(path)


def write_yaml(document: Any, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``document`` as YAML (keys in their order), under a temporary name, then renamed.

    Returns
    -------
    The absolute path written.

    Refuses an existing file unless ``overwrite`` (:class:`~sirtreg.errors.OutputExistsError`).
    """
    path = prepare_output(Path(os.path.abspath(path)), overwrite=overwrite)
    return write_atomically(path, yaml.safe_dump(document, sort_keys=False, allow_unicode=True), overwrite=True)
