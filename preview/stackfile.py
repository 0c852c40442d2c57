"""Pulumi.yaml and Pulumi.<stack>.yaml, read defensively.

A stack file comes from a pull request as often as from an operator, so it is read with
bounds, and everything a typo or a hostile change can put in it is refused with one line,
``<file or key>: <what is wrong>`` (StackConfigError, exit 2), in bounded time and memory:

=================================  ===================================================
bound or rule                      why
=================================  ===================================================
file at most ``MAX_FILE_BYTES``    the project's stack files are under 1 KiB; only that
(256 KiB), UTF-8                   much is ever read from disk
scalars at most                    a setting is a name, a number or a short expression;
``MAX_SCALAR_CHARS`` (4 KiB),      a ``secure:`` ciphertext of a longer secret does not
keys at most ``MAX_KEY_CHARS``     fit either (the platform reads credentials from
(256)                              Secrets, never from the stack file)
nesting at most ``MAX_DEPTH`` (32) the settings nest four levels; a deeper document is
                                   refused on the event stream, before any recursion
at most ``MAX_ALIASES`` (16)       YAML aliases are expanded by every consumer (the CLI
aliases, and the document expanded hands JSON to the program): "billion laughs" is
at most ``MAX_NODES`` (10,000)     refused by counting, on the event stream, what each
nodes and ``MAX_EXPANDED_CHARS``   anchor expands to, before a node is built
(1 MiB) of text
one document                       as the CLI reads it
no duplicate key, at any depth     the CLI's YAML library refuses them too; silently
                                   keeping the last one hides a mistake
keys are text                      ``on:`` is ``true`` in YAML 1.1 and ``1:`` a number:
                                   quote them
only plain tags                    text, numbers, booleans, null, maps, sequences and
                                   merge keys; ``!!binary``, ``!!set``, ``!!python/...``
                                   and custom tags are refused; date-like scalars stay
                                   text, as the CLI hands them to the program
finite numbers only                ``.nan``, ``.inf`` and overflowing floats
                                   (``1.0e+999``) would render as ``nan``/``inf``
printable text                     no control characters (C0 except tab and newline in
                                   values, DEL, C1 such as NEL), no format characters
                                   (bidi overrides, zero-width spaces, BOM), no
                                   U+2028/U+2029, no lone surrogates; keys take neither
                                   tab nor newline.  Values keep newlines and tabs:
                                   block scalars legitimately hold them, and each
                                   setting decides whether it takes more than one line
=================================  ===================================================

Keys in messages are JSON-pointer-like paths: ``Pulumi.prod.yaml#/config/tikit:backend``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

import yaml
from yaml import events, nodes

MAX_FILE_BYTES = 256 * 1024
MAX_SCALAR_CHARS = 4096
MAX_KEY_CHARS = 256
MAX_DEPTH = 32
MAX_ALIASES = 16
MAX_NODES = 10_000
MAX_EXPANDED_CHARS = 1024 * 1024

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"  # a bare `=`: text, as the CLI reads it
_FLOAT = "tag:yaml.org,2002:float"
_SCALAR_TAGS = {_STR, _VALUE, _FLOAT, "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"}
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
# A plain scalar YAML 1.2 (the CLI's YAML library) reads as a number, though YAML 1.1
# (PyYAML) reads it as text when its exponent has no sign: '-1.5e400' overflows either way.
_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?", re.ASCII)
# Characters Python deems printable are fine; of the others, values keep these.
_VALUE_WHITESPACE = "\t\n"
# Unicode categories refused (beyond str.isprintable's verdict, which also refuses
# spaces other than ' ' and unassigned code points: those are left to the settings).
_REFUSED_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")


class StackConfigError(Exception):
    """The project or stack file itself is unusable (exit code 2, like a settings error).
    ``str(err)`` is one line of printable text, ``<key>: <what is wrong>``, as
    settings.ConfigError's is: line breaks and other control characters the files hold
    are shown escaped, never printed raw to a terminal."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(escape(f"{key}: {message}"))


def escape(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\n``, ``\\x1b``,
    ``\\u2028``): one line, and no terminal control sequence."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _shown(text: str, limit: int = 60) -> str:
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return "'" + text + "'"


def control_character(text: str, *, allowed: str = "", printable_only: bool = False) -> Optional[str]:
    """What is wrong with the first control, format, separator or surrogate character of
    ``text`` that is not in ``allowed`` (with ``printable_only``, the first character
    that is not printable at all), e.g. 'the control character U+2028'; None when
    there is none."""
    if text.isprintable():
        return None
    import unicodedata

    for ch in text:
        if ch in allowed or ch.isprintable():
            continue
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            return f"the control character U+{ord(ch):04X}"
        if printable_only:
            return f"the non-printable character U+{ord(ch):04X}"
    return None


# --- the loader -------------------------------------------------------------------------


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader without the timestamp resolver (a date stays text, as the CLI's YAML
    library hands it to the program) and with a bare ``=`` as text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_constructor(_VALUE, lambda loader, node: loader.construct_scalar(node))


def _line(mark: Any) -> str:
    return f" at line {mark.line + 1}" if mark is not None else ""


def _where(name: str, path: tuple[str, ...]) -> str:
    return f"{name}#/" + "/".join(path) if path else name


# --- pass 1: the event stream (no node is built) -----------------------------------------


def _scan_events(text: str, name: str) -> None:
    """Check nesting, scalar lengths, aliases and the expanded size on the event stream.

    Each anchor's expanded size (nodes, characters) is recorded when its node ends; an
    alias adds that size, so the document's expanded size is known without expanding it,
    in time linear in the file."""
    loader = _Loader(text)
    try:
        open_nodes: list[tuple[Optional[str], int, int]] = []  # (anchor, nodes, chars) at its start
        anchors: dict[str, tuple[int, int]] = {}
        total_nodes = total_chars = aliases = documents = 0
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, events.StreamEndEvent):
                return
            if isinstance(event, events.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise StackConfigError(name, f"holds more than one YAML document (a second one starts{_line(event.start_mark)})")
                continue
            if isinstance(event, events.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise StackConfigError(name, f"uses more than {MAX_ALIASES} aliases{_line(event.start_mark)}")
                if event.anchor not in anchors:
                    if any(anchor == event.anchor for anchor, _, _ in open_nodes):
                        raise StackConfigError(name, f"alias *{event.anchor} refers to itself{_line(event.start_mark)}")
                    raise StackConfigError(name, f"undefined alias *{event.anchor}{_line(event.start_mark)}")
                n, c = anchors[event.anchor]
                total_nodes += n
                total_chars += c
            elif isinstance(event, events.ScalarEvent):
                if len(event.value) > MAX_SCALAR_CHARS:
                    raise StackConfigError(
                        name, f"a value{_line(event.start_mark)} is {len(event.value)} characters; at most {MAX_SCALAR_CHARS} allowed"
                    )
                total_nodes += 1
                total_chars += len(event.value)
                if event.anchor is not None:
                    anchors[event.anchor] = (1, len(event.value))
            elif isinstance(event, events.CollectionStartEvent):
                if len(open_nodes) >= MAX_DEPTH:
                    raise StackConfigError(name, f"is nested deeper than {MAX_DEPTH} levels{_line(event.start_mark)}")
                open_nodes.append((event.anchor, total_nodes, total_chars))
                total_nodes += 1
            elif isinstance(event, events.CollectionEndEvent):
                anchor, nodes_before, chars_before = open_nodes.pop()
                if anchor is not None:
                    anchors[anchor] = (total_nodes - nodes_before, total_chars - chars_before)
            if total_nodes > MAX_NODES or total_chars > MAX_EXPANDED_CHARS:
                raise StackConfigError(
                    name,
                    f"expands to more than {MAX_NODES:,} values or {MAX_EXPANDED_CHARS // (1024 * 1024)} MiB of text"
                    f"{_line(event.start_mark)} (an alias counts as everything it repeats)",
                )
    finally:
        loader.dispose()


# --- pass 2: the node graph (built, never expanded) --------------------------------------


def _check_nodes(root: nodes.Node, name: str, loader: _Loader) -> None:
    """Keys, duplicates, tags, numbers and characters of every distinct node (an aliased
    node is checked once, at its first path).  Depth is bounded by pass 1."""
    seen: set[int] = set()

    def walk(node: nodes.Node, path: tuple[str, ...]) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        where = _where(name, path)
        if isinstance(node, nodes.MappingNode):
            if node.tag != _MAP:
                raise StackConfigError(where, f"tag {node.tag} is not allowed{_line(node.start_mark)}; use a plain map")
            keys: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    walk(value_node, path + ("<<",))
                    continue
                key = _key_text(key_node, where)
                if key in keys:
                    raise StackConfigError(
                        where, f"duplicate key {_shown(key)}{_line(key_node.start_mark)} (first{_line(keys[key])})"
                    )
                keys[key] = key_node.start_mark
                walk(value_node, path + (key,))
        elif isinstance(node, nodes.SequenceNode):
            if node.tag != _SEQ:
                raise StackConfigError(where, f"tag {node.tag} is not allowed{_line(node.start_mark)}; use a plain list")
            for i, item in enumerate(node.value):
                walk(item, path + (str(i),))
        else:
            if node.tag not in _SCALAR_TAGS:
                raise StackConfigError(where, f"tag {node.tag} is not allowed{_line(node.start_mark)}")
            if node.tag == _FLOAT or (not node.style and _YAML12_FLOAT.fullmatch(node.value)):
                value = loader.construct_yaml_float(node) if node.tag == _FLOAT else float(node.value)
                if not math.isfinite(value):
                    raise StackConfigError(where, f"{_shown(node.value)}{_line(node.start_mark)} is not a finite number")
            elif problem := control_character(node.value, allowed=_VALUE_WHITESPACE):
                raise StackConfigError(where, f"the value{_line(node.start_mark)} contains {problem}")

    walk(root, ())


def _key_text(node: nodes.Node, where: str) -> str:
    if not isinstance(node, nodes.ScalarNode):
        kind = "a map" if isinstance(node, nodes.MappingNode) else "a sequence"
        raise StackConfigError(where, f"a key{_line(node.start_mark)} is {kind}; keys are text (quote them)")
    if node.tag != _STR:
        what = {"tag:yaml.org,2002:bool": "a boolean", "tag:yaml.org,2002:null": "null"}.get(node.tag, "a number")
        raise StackConfigError(where, f"key {_shown(node.value)}{_line(node.start_mark)} is read as {what}, not text; quote it")
    key = node.value
    if len(key) > MAX_KEY_CHARS:
        raise StackConfigError(where, f"a key{_line(node.start_mark)} is {len(key)} characters; at most {MAX_KEY_CHARS} allowed")
    if problem := control_character(key, printable_only=True):
        raise StackConfigError(where, f"key {_shown(key)}{_line(node.start_mark)} contains {problem}")
    return key


# --- entry points ------------------------------------------------------------------------


def loads(text: str, name: str) -> Any:
    """The document in ``text`` (the file ``name``), checked as the module docstring says."""
    try:
        _scan_events(text, name)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            _check_nodes(root, name, loader)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow in a stream
        line = text.count("\n", 0, exc.position) + 1 if 0 <= exc.position <= len(text) else None
        raise StackConfigError(
            name, f"is not valid YAML{f' at line {line}' if line else ''}: it contains the control character U+{exc.character:04X}"
        ) from None
    except yaml.YAMLError as exc:
        raise StackConfigError(name, f"is not valid YAML{_yaml_where(exc)}") from None


def load(path: Path, name: Optional[str] = None) -> Any:
    """The document in the file at ``path``; at most MAX_FILE_BYTES are read."""
    name = name or path.name
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise StackConfigError(name, f"is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StackConfigError(name, "is not UTF-8 text") from None
    return loads(text, name)


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" at line {mark.line + 1}" if mark else ""

