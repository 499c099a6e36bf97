"""The ``mmib`` command: a thin layer over the library.

Sub-commands live in :mod:`mmib.commands`, one module each, discovered at
start-up: a module defines ``COMMAND`` (its name), ``HELP``, ``ORDER``,
``add_arguments(parser)`` and ``run(args) -> int``. User errors
(:class:`~mmib.errors.MMIBError`, and OSError from the environment: a file that
cannot be read or written, a full disk) print one line and exit 2; ``--debug``
shows the traceback instead. Warnings print as one ``mmib CMD: warning: ...``
line each. A closed stdout (``mmib train ... | head -1``) ends the command
quietly with status 141, as SIGPIPE would.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from mmib.errors import MMIBError


def _command_modules() -> list[ModuleType]:
    import mmib.commands as pkg

    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"mmib.commands.{info.name}")
        if hasattr(mod, "COMMAND"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.COMMAND))


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names (its first argument that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``mmib`` parser. Given ``argv``, only the sub-command it names gets its arguments
    (``add_arguments`` may import what its defaults come from; ``mmib --help`` then imports no
    PyTorch); without ``argv`` every sub-command gets them."""
    parser = argparse.ArgumentParser(
        prog="mmib", description="Multimodal representation learning with information-bottleneck and MI objectives."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    from mmib import __version__

    parser.add_argument("--version", action="version", version=f"mmib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _command_in(argv) if argv is not None else None
    for mod in _command_modules():
        p = sub.add_parser(mod.COMMAND, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        if argv is None or mod.COMMAND == wanted:
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser




def _one_line_warnings(command: str) -> None:
    """Show warnings as ``mmib COMMAND: warning: message`` (no source line)."""

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        stream = file if file is not None else sys.stderr
        try:
            text = " ".join(str(message).split("\n"))
            stream.write(f"mmib {command}: warning: {text}\n")
        except (OSError, ValueError):
            pass

    warnings.showwarning = show


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)
    shown = warnings.showwarning
    if not debug:
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        _one_line_warnings(args.command)
    try:
        return int(args._run(args) or 0)
    except MMIBError as exc:
        if debug:
            raise
        print(f"mmib {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except OSError as exc:  # a file the environment will not let us read or write
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mmib {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmib {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
