"""How every ``geoshard`` command ends: exit codes, error messages, a closed stdout.

One decorator, :func:`handles_errors`, wraps every command (``simulate`` included):

* a :class:`~geoshard.errors.GeoshardError` prints ``error: <message>`` on stderr and
  exits with its code (2 config or input, 3 backend, 1 a gate such as no healthy replica
  inside the jurisdiction);
* Ctrl-C prints ``interrupted`` on stderr and exits 130;
* a closed stdout (the reader went away, as in ``geoshard schema | head -1``) ends the
  command quietly: nothing on stderr, and the command's own result stands (0, or the
  verdict ``simulate`` had already reached). It is never 1, which means a gate failed;
* with ``--json``, an error also prints one JSON object on stdout, so a machine reading
  stdout always gets a document::

      {"error": {"category": "config", "message": "...", "exit_code": 2, "problems": [...]}}

  ``problems`` (one line per spec problem, each ``file:line: key.path: problem; fix``) is
  there for spec errors only. Usage errors that the flag parser finds (an unknown flag, a
  value of the wrong type) get the same object with category ``usage``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from geoshard.errors import GeoshardError, SpecError

__all__ = [
    "EXIT_BACKEND",
    "EXIT_CODES_HELP",
    "EXIT_GATE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "GeoshardGroup",
    "StdoutConsole",
    "emit_json",
    "error_document",
    "handles_errors",
    "print_result",
    "silence_stdout",
]

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_BACKEND, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 a gate failed (SLO, residency, invariant, no healthy replica in "
    "the jurisdiction); 2 usage or config error; 3 backend unreachable; 130 interrupted. "
    "A closed stdout (e.g. | head) ends a command quietly with its own result, never 1. "
    'With --json an error also prints {"error": {"category", "message", "exit_code"}} '
    "on stdout; the message always goes to stderr."
)

F = TypeVar("F", bound=Callable[..., Any])


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (nothing else goes to stdout with --json)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def error_document(
    category: str, message: str, exit_code: int, problems: list[str] | None = None
) -> dict[str, Any]:
    """The JSON object an error prints on stdout under ``--json``."""
    err: dict[str, Any] = {"category": category, "message": message, "exit_code": exit_code}
    if problems:
        err["problems"] = problems
    return {"error": err}


def silence_stdout() -> None:
    """Point stdout at the null device after its reader went away.

    Without this, the interpreter's final flush of the buffered rest raises again at exit
    (an "Exception ignored" message and exit code 120).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test runner's buffer)
        pass


def print_result(doc: Any, render: Callable[[], None], json_out: bool) -> None:
    """Print a command's result on stdout: ``doc`` as JSON with ``--json``, else ``render()``.

    The result is already decided (the caller's exit code stands): a reader that went away
    ends the output quietly, whether the pipe closed under ``sys.stdout`` or under a rich
    console (which answers a broken pipe with ``SystemExit(1)``).
    """
    try:
        if json_out:
            sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        else:
            render()
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
    except SystemExit as exc:
        if not isinstance(exc.__context__, BrokenPipeError):
            raise
        silence_stdout()


def _fail(
    category: str, message: str, code: int, json_out: bool, problems: list[str] | None = None
) -> typer.Exit:
    print(f"error: {message}" if category != "interrupted" else "interrupted", file=sys.stderr)
    if json_out:
        try:
            emit_json(error_document(category, message, code, problems))
            sys.stdout.flush()
        except BrokenPipeError:
            silence_stdout()
    return typer.Exit(code=code)


def handles_errors(fn: F) -> F:
    """Wrap a command: errors to messages and exit codes, as the module docstring says.

    The command's ``--json`` flag is read from its keyword argument ``json_out``.
    Unexpected exceptions (bugs) are not caught: their traceback is what a report needs.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        json_out = bool(kwargs.get("json_out", False))
        try:
            try:
                result = fn(*args, **kwargs)
            except typer.Exit:
                sys.stdout.flush()  # a broken pipe surfaces here, not at interpreter exit
                raise
            sys.stdout.flush()
            return result
        except GeoshardError as exc:
            problems = exc.problems if isinstance(exc, SpecError) else None
            raise _fail(exc.category, str(exc), exc.exit_code, json_out, problems) from None
        except KeyboardInterrupt:
            raise _fail("interrupted", "interrupted", EXIT_INTERRUPTED, json_out) from None
        except BrokenPipeError:
            silence_stdout()
            raise typer.Exit(code=EXIT_OK) from None

    wrapper.handles_errors = True  # type: ignore[attr-defined]  # tests check every command
    return wrapper  # type: ignore[return-value]


class StdoutConsole(Console):
    """A rich console for stdout whose closed pipe reaches :func:`handles_errors`.

    Rich's default answer to a broken pipe is ``SystemExit(1)``, the code of a failed gate.
    """

    def on_broken_pipe(self) -> None:
        """Stop writing and let the command's error handling end it quietly."""
        self.quiet = True
        raise BrokenPipeError


class GeoshardGroup(TyperGroup):
    """The command group: flag-parser errors also give the JSON error object under --json."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Remember the raw arguments, to know later whether ``--json`` was asked for."""
        ctx.meta["geoshard.argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; on a usage error with ``--json``, print the error object too."""
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # click's UsageError, matched by its interface: typer >= 0.26 vendors its own click
            usage = getattr(exc, "exit_code", None) == EXIT_USAGE and hasattr(exc, "format_message")
            if usage and "--json" in ctx.meta.get("geoshard.argv", []):
                try:
                    emit_json(error_document("usage", exc.format_message(), EXIT_USAGE))  # type: ignore[attr-defined]
                    sys.stdout.flush()
                except BrokenPipeError:
                    silence_stdout()
            raise
