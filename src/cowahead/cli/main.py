"""The ``cowahead`` command: one module per verb, listed in COMMANDS.

User errors (CowaheadError, bad options) print one line on stderr and exit
2; an interrupt exits 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from ..errors import CowaheadError
from . import calibrate, evaluate, generate, kernel, record, report, scenario, simulate, sweep, validate

COMMANDS = [evaluate.command, generate.command, simulate.command, sweep.command, record.command, validate.command, calibrate.command,
            report.command, scenario.command, kernel.command]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cowahead")
def cowahead() -> None:
    """COW-ahead: copy-on-write fault clustering, modelled and measured."""


for _command in COMMANDS:
    cowahead.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    try:
        status = cowahead.main(args=argv, prog_name="cowahead", standalone_mode=False)
    except CowaheadError as e:
        print(f"cowahead: error: {e}", file=sys.stderr)
        return 2
    except click.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        print(f"cowahead: error: {e.format_message()}{hint}", file=sys.stderr)
        return 2
    except click.ClickException as e:
        print(f"cowahead: error: {e.format_message()}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, click.Abort):
        print("cowahead: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0  # a verb's click.exceptions.Exit(code), e.g. validate's 1


if __name__ == "__main__":
    sys.exit(main())
