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
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as err:
        print(f"dsrecon {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
