"""Find the line each key of a TOML document is written on.

Why this module exists: `tomllib` returns plain dicts without positions, but an error message
that says ``engine.toml:12: risk.max_positions: ...`` is far more useful than one without a line.

Trade-offs made:
- A small hand-written scanner instead of a position-preserving TOML parser dependency. It
  understands what config files use: ``[table]`` and ``[[array.of.tables]]`` headers (indices
  counted, nested arrays of tables per parent), bare/quoted/dotted keys, strings of all four
  kinds (so ``#``, ``[`` or ``=`` inside a string mislead nothing), multi-line arrays (elements
  mapped to the line they start on) and inline tables (their keys mapped to the line they are on).
- It is run only on text `tomllib` has accepted, and it is best effort: on anything it does not
  understand it skips to the next line and carries on. It never raises; a key it cannot place
  simply has no line, and :func:`find_line` falls back to the nearest enclosing key.
- The first occurrence of a path wins (a table's line is its header, an array's line its first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

KeyPath = tuple[str | int, ...]

_BARE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_SCALAR_END = frozenset(",]}#\n")


def scan_key_lines(text: str) -> dict[KeyPath, int]:
    """Map every key path in `text` to its 1-based line; list elements appear as int parts.

    ``[[agents]]`` twice then ``name = "x"`` yields ``("agents", 1, "name") -> line``.
    """
    return _Scanner(text).scan()


def find_line(lines: Mapping[KeyPath, int], path: Sequence[str | int]) -> int | None:
    """Line of `path`, or of its nearest enclosing key that has one (None if nothing does).

    The fallback points a "field required" error at the table that lacks the field.
    """
    for length in range(len(path), 0, -1):
        line = lines.get(tuple(path[:length]))
        if line is not None:
            return line
    return None


class _Scanner:
    """Single pass over the text; tracks the current table and the array-of-tables counts."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._line = 1
        self._lines: dict[KeyPath, int] = {}
        # Resolved path of an array of tables (indices of enclosing arrays included) -> count.
        self._aot_counts: dict[KeyPath, int] = {}

    # -- primitives ----------------------------------------------------------------------------

    def _peek(self, offset: int = 0) -> str:
        index = self._pos + offset
        return self._text[index] if index < len(self._text) else ""

    def _move_to(self, position: int) -> None:
        position = min(position, len(self._text))
        self._line += self._text.count("\n", self._pos, position)
        self._pos = position

    def _advance(self, count: int = 1) -> None:
        self._move_to(self._pos + count)

    def _skip_inline_space(self) -> None:
        while self._peek() in (" ", "\t"):
            self._advance()

    def _skip_blank(self) -> None:
        """Skip whitespace, newlines and comments."""
        while True:
            char = self._peek()
            if char in (" ", "\t", "\r", "\n"):
                self._advance()
            elif char == "#":
                self._skip_line()
            else:
                return

    def _skip_line(self) -> None:
        end = self._text.find("\n", self._pos)
        self._move_to(len(self._text) if end < 0 else end + 1)

    def _record(self, path: KeyPath, line: int) -> None:
        self._lines.setdefault(path, line)

    def _record_prefixes(self, base: KeyPath, path: KeyPath, line: int) -> None:
        for length in range(len(base) + 1, len(path) + 1):
            self._record(path[:length], line)

    # -- document ------------------------------------------------------------------------------

    def scan(self) -> dict[KeyPath, int]:
        table: KeyPath = ()
        while True:
            self._skip_blank()
            char = self._peek()
            if not char:
                return self._lines
            line = self._line
            if char == "[":
                is_array = self._peek(1) == "["
                self._advance(2 if is_array else 1)
                keys = self._parse_key()
                if keys is not None:
                    table = self._enter_table(keys, is_array, line)
                self._skip_line()
                continue
            keys = self._parse_key()
            if keys is None or not self._expect("="):
                self._skip_line()
                continue
            path = table + tuple(keys)
            self._record_prefixes(table, path, line)
            start = self._pos
            self._parse_value(path)
            if self._pos == start:
                self._skip_line()

    def _enter_table(self, keys: list[str], is_array: bool, line: int) -> KeyPath:
        """Resolve a header to a path, counting arrays of tables, and record its prefixes."""
        resolved: list[str | int] = []
        for position, key in enumerate(keys):
            resolved.append(key)
            base = tuple(resolved)
            self._record(base, line)
            if is_array and position == len(keys) - 1:
                index = self._aot_counts.get(base, 0)
                self._aot_counts[base] = index + 1
                resolved.append(index)
                self._record(tuple(resolved), line)
            elif base in self._aot_counts:
                # `[agents.params]` after `[[agents]]` belongs to the latest agents element.
                resolved.append(self._aot_counts[base] - 1)
                self._record(tuple(resolved), line)
        return tuple(resolved)

    # -- keys ----------------------------------------------------------------------------------

    def _parse_key(self) -> list[str] | None:
        """A dotted key of bare and quoted parts, or None if none starts here."""
        keys: list[str] = []
        while True:
            self._skip_inline_space()
            char = self._peek()
            if char == '"':
                keys.append(self._parse_basic_string())
            elif char == "'":
                keys.append(self._parse_literal_string())
            elif char and char in _BARE_CHARS:
                start = self._pos
                while self._peek() and self._peek() in _BARE_CHARS:
                    self._advance()
                keys.append(self._text[start : self._pos])
            else:
                return None
            self._skip_inline_space()
            if self._peek() != ".":
                return keys
            self._advance()

    def _expect(self, char: str) -> bool:
        self._skip_inline_space()
        if self._peek() != char:
            return False
        self._advance()
        return True

    # -- values --------------------------------------------------------------------------------

    def _parse_value(self, path: KeyPath) -> None:
        self._skip_inline_space()
        char = self._peek()
        if self._text.startswith('"""', self._pos):
            self._skip_multiline('"""', escapes=True)
        elif self._text.startswith("'''", self._pos):
            self._skip_multiline("'''", escapes=False)
        elif char == '"':
            self._parse_basic_string()
        elif char == "'":
            self._parse_literal_string()
        elif char == "[":
            self._parse_array(path)
        elif char == "{":
            self._parse_inline_table(path)
        else:
            # Numbers, booleans, dates (which may contain a space): up to a delimiter.
            while self._peek() and self._peek() not in _SCALAR_END:
                self._advance()

    def _parse_basic_string(self) -> str:
        self._advance()  # opening quote
        out: list[str] = []
        while True:
            char = self._peek()
            if char in ("", "\n"):
                return "".join(out)
            self._advance()
            if char == '"':
                return "".join(out)
            if char == "\\":
                out.append(self._parse_escape())
            else:
                out.append(char)

    def _parse_escape(self) -> str:
        code = self._peek()
        self._advance()
        if code in ("u", "U"):
            width = 4 if code == "u" else 8
            digits = self._text[self._pos : self._pos + width]
            self._advance(width)
            try:
                return chr(int(digits, 16))
            except ValueError:
                return ""
        return _ESCAPES.get(code, code)

    def _parse_literal_string(self) -> str:
        self._advance()  # opening quote
        start = self._pos
        while self._peek() not in ("", "'", "\n"):
            self._advance()
        value = self._text[start : self._pos]
        if self._peek() == "'":
            self._advance()
        return value

    def _skip_multiline(self, delimiter: str, *, escapes: bool) -> None:
        search_from = self._pos + 3
        while True:
            end = self._text.find(delimiter, search_from)
            if end < 0:
                self._move_to(len(self._text))
                return
            backslashes = 0
            while escapes and self._text[end - 1 - backslashes] == "\\":
                backslashes += 1
            if backslashes % 2 == 0:
                break
            search_from = end + 1
        self._move_to(end + 3)
        # Up to two quotes right before the delimiter belong to the content: `""""" ` is legal.
        for _ in range(2):
            if self._peek() == delimiter[0]:
                self._advance()

    def _parse_array(self, path: KeyPath) -> None:
        self._advance()  # [
        index = 0
        while True:
            self._skip_blank()
            char = self._peek()
            if not char:
                return
            if char == "]":
                self._advance()
                return
            if char == ",":
                self._advance()
                index += 1
                continue
            element = (*path, index)
            self._record(element, self._line)
            start = self._pos
            self._parse_value(element)
            if self._pos == start:
                self._advance()

    def _parse_inline_table(self, path: KeyPath) -> None:
        self._advance()  # {
        while True:
            self._skip_blank()
            char = self._peek()
            if not char:
                return
            if char == "}":
                self._advance()
                return
            if char == ",":
                self._advance()
                continue
            line = self._line
            keys = self._parse_key()
            if keys is None or not self._expect("="):
                return
            key_path = path + tuple(keys)
            self._record_prefixes(path, key_path, line)
            start = self._pos
            self._parse_value(key_path)
            if self._pos == start:
                self._advance()
