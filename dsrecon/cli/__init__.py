"""The ``dsrecon`` command line.

Each subcommand lives in its own module ``dsrecon/cli/cmd_<name>.py`` that defines
``add_parser(subparsers)`` (registers its argparse parser) and ``run(args) -> int``; this module
finds them, so adding a subcommand touches no other file.
"""

from __future__ import annotations

import argparse
import pkgutil
import sys
from importlib import import_module

from dsrecon._version import __version__


def _subcommand_modules():
    import dsrecon.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            yield import_module(f"dsrecon.cli.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsrecon",
        description="Dynamical-systems reconstruction: simulate, fit, evaluate and compare.",
    )
    parser.add_argument("--version", action="version", version=f"dsrecon {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommand_modules():
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; completed checkpoints and results are kept", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, ImportError, OSError) as err:
        # OSError: a file the command could not read or write; its message names the file
        print(f"dsrecon {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1


def _one_line(err: Exception) -> str:
    """The error's message on one line (a few library errors span several)."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) and err.filename is not None:
        text = f"{text} ({type(err).__name__}; check the path and its permissions)"
    return text


if __name__ == "__main__":
    sys.exit(main())
