"""Markdown from values the workflow did not write itself: config strings, data labels, file contents.

The deck template prints every value through :func:`escape` (Jinja2's
``finalize``), so a value is text, never markup: an experiment name, a class
folder or a model id cannot open a code span, a raw HTML tag, a link or a
Quarto shortcode. Markup the workflow builds on purpose (tables, code spans and
blocks, figure paths) is made by the helpers here from escaped parts and marked
:class:`Markdown`, which :func:`escape` prints as it is.
"""

from __future__ import annotations

import re

# Every ASCII punctuation character: pandoc's Markdown reads each one literally after a backslash.
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_BACKTICKS = re.compile(r"`+")
# Quarto expands {{< shortcode >}} anywhere, code included, before pandoc reads the file; {{{< ... >}}} is its escape.
_SHORTCODE_OPEN, _SHORTCODE_CLOSE = re.compile(r"\{\{<"), re.compile(r">\}\}")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9]+)?$")


class Markdown(str):
    """Text that is already safe Markdown, printed as it is."""


def _one_line(value) -> str:
    """The value as one line of text: newlines, tabs and other control characters become spaces."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())


def escape(value) -> Markdown:
    """`value` as literal Markdown text (numbers as they are, strings with every punctuation character escaped)."""
    if isinstance(value, Markdown):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Markdown(str(value))
    return Markdown(_PUNCTUATION.sub(r"\\\1", _one_line(value)))


def _quarto_literal(text: str) -> str:
    return _SHORTCODE_CLOSE.sub(">}}}", _SHORTCODE_OPEN.sub("{{{<", text))


def _fence(text: str, shortest: int) -> str:
    """A run of backticks longer than any inside `text`, and at least `shortest` long."""
    return "`" * max(shortest, max(map(len, _BACKTICKS.findall(text)), default=0) + 1)


def code_span(value, quarto: bool) -> Markdown:
    """An inline code span showing `value` literally, however many backticks it holds."""
    text = _one_line(value)
    if quarto:
        text = _quarto_literal(text)
    fence = _fence(text, 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markdown(f"{fence}{pad}{text}{pad}{fence}")


def code_block(value, language: str, quarto: bool) -> Markdown:
    """A fenced code block showing `value` literally: its fence is longer than any run of backticks inside."""
    text = str(value).rstrip("\n")
    if quarto:
        text = _quarto_literal(text)
    fence = _fence(text, 3)
    return Markdown(f"{fence}{language}\n{text}\n{fence}")


def plain_path(path: str) -> Markdown:
    """A relative link target made of plain names only (letters, digits, ``_-`` and one extension), else an error."""
    parts = path.split("/")
    if not all(_PLAIN_NAME.match(p) for p in parts):
        raise ValueError(f"{path!r} is not a plain relative path (letters, digits, '_', '-' and one extension per name)")
    return Markdown(path)

