"""Reading and writing the YAML input files of sirtreg: cohort manifests and patient plans.

The machinery shared by :mod:`sirtreg.study.manifest` and :mod:`sirtreg.pipeline.plan`:
a safe loader that reports repeated keys, a :class:`Reader` that collects every problem
of a document (unknown keys with the nearest known one, missing keys, bad paths, ids,
choices and numbers) instead of stopping at the first, the one error that lists them,
and an atomic YAML writer. Each problem is one line, ``"<where>: <what>"``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sirtreg.dosimetry.isotopes import get_isotope
from sirtreg.errors import InputError
from sirtreg.io import prepare_output

MODALITIES = ("CT", "MR")
"""Modalities of a floating image."""

ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
"""What an id (of a patient, of a floating image) may hold: letters, digits, '.', '_' and '-'."""

__all__ = ["ID_PATTERN", "MODALITIES", "Loader", "Reader", "describe", "entry_label", "load_yaml", "refusal",
           "relative", "write_yaml"]


# --- reading -------------------------------------------------------------------------
class Loader(yaml.SafeLoader):
    """A safe YAML loader that records keys repeated in one mapping (plain YAML keeps the last one silently).

    Attributes
    ----------
    repeated : one problem line per repeated key, naming its line.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    self.repeated.append(f"line {key_node.start_mark.line + 1}: key {key_node.value!r} is repeated")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path, *, what: str) -> tuple[Any, list[str]]:
    """Parse a YAML file with :class:`Loader`.

    Parameters
    ----------
    path : the file.
    what : what the file is, for the error message ("cohort manifest", "plan").

    Returns
    -------
    The parsed document and the repeated-key problems.

    Raises :class:`~sirtreg.errors.InputError` if the file cannot be read or parsed.
    """
    try:
        loader = Loader(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the {what} {path}: {exc}") from None
    try:
        return loader.get_single_data(), loader.repeated
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
                close = difflib.get_close_matches(str(key), list(keys), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(keys)}"
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

    def fraction(self, where: str, value: Any) -> float | None:
        """A number in [0, 1)."""
        fraction = self.number(where, value)
        if fraction is not None and not 0 <= fraction < 1:
            self.problem(where, f"must be in [0, 1), got {value!r}")
            return None
        return fraction

    def isotope(self, where: str, value: Any) -> str | None:
        """The isotope's canonical name ("Y-90", "Ho-166")."""
        try:
            return get_isotope(str(value)).name
        except InputError as exc:
            self.problem(where, str(exc))
            return None


def entry_label(prefix: str, entry: Any, number: int) -> str:
    """``prefix`` and the entry's id if it has a textual one, else its position from 1 ("patient #3")."""
    if isinstance(entry, dict) and isinstance(entry.get("id"), str):
        return f"{prefix} {entry['id']}"
    return f"{prefix} #{number}"


def describe(value: Any) -> str:
    """``repr(value)``, cut to 60 characters, for problem lines."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


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
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
