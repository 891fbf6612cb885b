"""The error the loader raises, carrying every problem of a config at once.

Why this module exists: fixing a config one error per start-up is slow and annoying, so the
loader collects everything wrong (syntax, environment overrides, secrets, validation) into one
`ConfigError` whose lines look like compiler output: ``engine.toml:12: risk.x: message``.

Trade-off: `ConfigError` is a plain `Exception`, not a `ValueError`, so a pydantic validator
that happens to call the loader cannot turn it into a validation error by accident. Problems
never contain secret values: the loader builds their messages from redacted inputs only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config."""

    path: str
    """Key path (``risk.max_positions``, ``agents[1].name``), or ``env:<VAR>`` for a bad
    environment override; empty for a syntax error."""
    message: str
    """What is wrong, naming the bad value (secrets excepted)."""
    line: int | None
    """1-based line in `source`, where known."""
    source: str
    """The file (as given to the loader), ``<string>``, or ``env:<VAR>`` for a value that came
    from an environment variable."""

    def format(self) -> str:
        """``source:line: path: message``, leaving out the parts that are unknown."""
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {what}"


class ConfigError(Exception):
    """The config could not be loaded; `problems` lists every reason."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__(self.format())

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigProblem]]]:
        # Exception pickles its args (the formatted text); rebuild from the problems instead,
        # so the error survives a trip through multiprocessing intact.
        return (type(self), (self.problems,))

    def format(self) -> str:
        """One problem per line."""
        return "\n".join(problem.format() for problem in self.problems)

    def __str__(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        return f"invalid configuration ({count} {noun}):\n{self.format()}"
