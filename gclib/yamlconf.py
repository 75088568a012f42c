"""YAML as gclib's configuration files read it: ``yaml.safe_load`` types, with two differences.

- A mapping key given twice in one document is refused (``DuplicateKeyError``, naming the key and both lines),
  instead of the later value silently winning.
- ``1e-4`` and ``1.0e4`` are floats, as in YAML 1.2 (YAML 1.1, which PyYAML follows, reads ``1e-4`` as text).

``loads(text)`` parses a string; ``read_yaml(path)`` reads a configuration file and turns every failure (missing,
a directory, unreadable, invalid YAML, a duplicate key, empty, not a mapping) into one single-line ``ConfigError``
naming the file.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from .checks import ConfigError

__all__ = ["DuplicateKeyError", "Loader", "loads", "read_yaml"]


class DuplicateKeyError(yaml.YAMLError):
    """A mapping key given twice in one YAML document."""

    def __init__(self, key, first_line: int, line: int):
        super().__init__(f"key {key!r} appears twice (lines {first_line} and {line})")
        self.key, self.first_line, self.line = key, first_line, line


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys and reads 1e-4 / 1.0e4 as floats (YAML 1.2)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                if first != key_node.start_mark.line + 1:
                    raise DuplicateKeyError(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def loads(text: str):
    """The YAML document ``text`` (duplicate keys refused, 1e-4 a float); raises yaml.YAMLError."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path) -> dict:
    """The mapping held by the YAML file ``path``; one ConfigError naming the file for anything else."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a directory; give the path of a YAML file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        d = loads(p.read_text())
    except DuplicateKeyError as e:
        raise ConfigError(f"config file {str(p)!r}: key {e.key!r} appears twice (lines {e.first_line} and "
                          f"{e.line}); keep one") from None
    except yaml.YAMLError as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark and problem else str(e)
        raise ConfigError(f"config file {str(p)!r} is not valid YAML ({' '.join(where.split())})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    if d is None or d == {}:
        raise ConfigError(f"config file {str(p)!r} is empty; it must hold key: value settings (see params/train/)")
    if not isinstance(d, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of key: value")
    return d
