"""The arguments every subcommand takes (`--set`, `--log-level`, `--log-json`, `--log-dir`), and the `python -m` entry point
of a component, which takes the same ones and checks `--set` as the `trajforge` subcommand does."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

NESTED_ASSIGNMENTS = "verb_assignments"


# An example `--set` for each command's help: a field of a config section that command reads.
SET_EXAMPLES = {
    "serve": "ingest.rate_limits.per_address_per_minute=0", "demo": "ingest.rate_limits.per_address_per_minute=0", "sandbox": "sandbox.wall_time_s=10",
    "synth-rules": "sandbox.wall_time_s=10", "synth-records": "synth_records.peers=4", "teacher": "teacher.mistake_rate=0.1", "rollout": "actors.loop.max_steps=2",
    "datasets": "datasets.max_input_tokens=1024", "pipelines.datasets": "datasets.max_input_tokens=1024",
    "build": "build.dedup.threshold=0.9", "train": "learner.train.max_steps=20",
    "pipelines.synth_rules": "sandbox.wall_time_s=10", "pipelines.synth_records": "synth_records.peers=4", "pipelines.teacher_srl": "teacher.mistake_rate=0.1",
    "actors.rollout": "actors.loop.max_steps=2", "learner.train": "learner.train.max_steps=20", "pipelines.build": "build.dedup.threshold=0.9",
}


class CommandParser(argparse.ArgumentParser):
    """argparse's parser, whose refusals say what to type: a misspelt command, verb or choice names the close one
    (`trajforge buidl`: did you mean 'build'?), and a command given without its command or verb (`trajforge`,
    `trajforge lake`) shows its help, which lists them, not only its usage line. Subparsers made from it are of it too."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is not None and value not in action.choices:
            from trajforge.settings.close_names import closest

            near = closest(str(value), map(str, action.choices))
            if near is not None:
                choices = ", ".join(map(repr, action.choices))
                raise argparse.ArgumentError(action, f"invalid choice: {value!r}: did you mean {near!r}? (choose from {choices})")
        super()._check_value(action, value)

    def error(self, message: str):
        verbs = next((action for action in self._actions if isinstance(action, argparse._SubParsersAction)), None)
        if verbs is not None and message == f"the following arguments are required: {argparse._get_action_name(verbs)}":
            self.print_help(sys.stderr)
            self.exit(2, f"{self.prog}: error: {message}\n")
        super().error(message)

    def unrecognized(self, arguments: list[str]):
        """Refuse arguments no option of this parser takes, naming the option closest to a misspelt one (`--bild`)."""
        from trajforge.settings.close_names import closest

        options = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        given = [argument.partition("=")[0] for argument in arguments if argument.startswith("--")]
        near = [f"{name}: did you mean {option}?" for name in given for option in [closest(name, options)] if option is not None]
        self.error(f"unrecognized arguments: {' '.join(arguments)}" + (f" ({'; '.join(near)})" if near else ""))


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1 (`--workers`, `--limit`), with a message that says so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def seconds(text: str, *, zero: bool) -> float:
    """A duration in seconds: a finite number, above 0 (or at least 0 where `zero`), with a message that says so."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds {'at least 0' if zero else 'above 0'}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type of a duration that must be above 0 (`--lease-s`)."""
    return seconds(text, zero=False)


def non_negative_seconds(text: str) -> float:
    """argparse type of a duration that may be 0 (`--idle-exit-s 0`: stop as soon as nothing is waiting)."""
    return seconds(text, zero=True)


def nonblank(text: str) -> str:
    """argparse type of a value that names something (`--commit`, `--file`): an empty or blank one is refused, not
    read as no value."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def nonblank_path(text: str) -> Path:
    """argparse type of a folder or file path (`--lake`): an empty one (`--lake "$LAKE"` with the variable unset) is refused,
    not read as the folder the command runs in (`forget` wrote its tombstone there, `lake pull` the raw lake)."""
    return Path(nonblank(text))


def common_arguments(parser: argparse.ArgumentParser, *, nested: bool = False, command: str = "") -> None:
    """Add the common arguments to a subcommand's parser, or (`nested`) to the parser of one of its verbs.
    `command` picks the `--set` example of the help (a command without one reads no config and refuses `--set`).

    argparse copies a verb's parsed namespace over its command's, defaults included, so a verb's copy of
    the arguments has no defaults (it leaves `trajforge sandbox --set a=1 apply` alone), and its `--set`
    goes to a list of its own that `merge_assignments` appends to the command's.
    """
    set_default, level_default, json_default, dir_default = (argparse.SUPPRESS,) * 4 if nested else ([], "INFO", False, None)
    parser.add_argument(
        "--set", dest=NESTED_ASSIGNMENTS if nested else "assignments", action="append", default=set_default, metavar="DOTTED.PATH=VALUE",
        help=f"override one config field (repeatable), e.g. --set {SET_EXAMPLES[command]}; environment variables "
        "TRAJFORGE__DOTTED__PATH do the same with lower precedence" if command in SET_EXAMPLES
        else "not taken: this command reads no config file",
    )
    parser.add_argument("--log-level", default=level_default, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging threshold (default INFO)")
    parser.add_argument("--log-json", action="store_true", default=json_default, help="log JSON lines instead of text")
    parser.add_argument("--log-dir", default=dir_default, metavar="DIR",
                        help="also log JSON lines to DIR, one file a UTC day (<command>-YYYY-MM-DD.jsonl; the Ray workers it "
                        "starts to workers-YYYY-MM-DD.jsonl on their node), keeping $TRAJFORGE_LOG_KEEP_DAYS days (14); "
                        "default $TRAJFORGE_LOG_DIR, else none")


def add_examples(parser: argparse.ArgumentParser, examples: str) -> None:
    """End a command's help with its examples, lines as written; a description or epilog of one paragraph is wrapped."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = _filled(parser.description)
    parser.epilog = "\n\n".join(text for text in (_filled(parser.epilog), "Examples:\n" + examples.strip("\n")) if text)


def log_dir_of(args: argparse.Namespace) -> str | None:
    """The folder of `--log-dir`, else $TRAJFORGE_LOG_DIR, else None."""
    from trajforge.logs import LOG_DIR_ENV

    return getattr(args, "log_dir", None) or os.environ.get(LOG_DIR_ENV) or None


def merge_assignments(args: argparse.Namespace) -> argparse.Namespace:
    """One `assignments` list: the command's `--set` values, then its verb's."""
    args.assignments = [*getattr(args, "assignments", []), *vars(args).pop(NESTED_ASSIGNMENTS, [])]
    return args


def module_main(module: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                config_roots: Callable[[argparse.Namespace], tuple[str, ...]], run_command: Callable[[argparse.Namespace], int],
                argv: list[str] | None = None) -> int:
    """`python -m <module>` (what `ray job submit` runs): the component's arguments plus the common ones; a `--set`
    of a section it does not read is refused, a TrajforgeError or a full disk is one line on stderr and exit status 2, Ctrl-C is 130
    and a reader that closed the pipe early 141, as for `trajforge <command>`."""
    from trajforge.cli.pipes import quiet_when_reader_leaves

    parser = CommandParser(prog=f"python -m {module}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    # Raw keeps a docstring's own lines; a text written as one line (a command's epilog) is wrapped as argparse would
    parser.description, parser.epilog = (_filled(text) for text in (parser.description, parser.epilog))
    common_arguments(parser, command=module)
    args = parser.parse_args(argv)

    return quiet_when_reader_leaves(lambda: run_guarded(args, module, f"python -m {module}", module, lambda: (config_roots(args), run_command)))


def run_guarded(args: argparse.Namespace, stem: str, command: str, prefix: str,
                load: Callable[[], tuple[tuple[str, ...], Callable[[argparse.Namespace], int]]]) -> int:
    """One command's run, for `trajforge <command>` and `python -m <module>` alike: logging (`stem` names its files),
    then `load()` (the sections the command reads, and the command), stray override variables warned of, `--set` checked
    against those sections (`command` named), and the command run. A TrajforgeError or a full disk is one line on stderr,
    `<prefix>: ...`, and exit status 2; Ctrl-C is 130."""
    from trajforge.errors import TrajforgeError
    from trajforge.logs import setup_logging
    from trajforge.settings import parse_assignments
    from trajforge.settings.env_check import warn_stray_variables
    from trajforge.storage_full import full_disk_message

    try:
        setup_logging(args.log_level, args.log_json, log_dir_of(args), stem=stem)
        roots, run_command = load()
        warn_stray_variables(known=roots)
        parse_assignments(args.assignments, roots, command)
        return run_command(args)
    except TrajforgeError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = full_disk_message(exc, getattr(args, "lake", None))
        if message is None:
            raise
        print(f"{prefix}: {message}", file=sys.stderr)
        return 2


def _filled(text: str | None) -> str | None:
    """A one-line help text wrapped to the terminal's width (at most 100 columns); text with its own lines as written."""
    if not text or "\n" in text:
        return text
    return textwrap.fill(text, width=min(shutil.get_terminal_size().columns, 100) - 2)
