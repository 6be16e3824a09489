"""The ``hpsearch`` command. Each subcommand's work lives in its own module, imported on use, so
``hpsearch --help`` and config errors stay fast (no torch or Ray import before they are needed)."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from importlib.metadata import version
from typing import Any, NoReturn

from hpsearch.models.config import ConfigError, did_you_mean

# subcommand -> "module:function"; each function takes the parsed args and returns an exit code.
HANDLERS = {
    "train": "hpsearch.core.training:train_command",
    "evaluate": "hpsearch.core.training:evaluate_command",
    "run": "hpsearch.driver.commands:run_command",
    "resume": "hpsearch.driver.commands:resume_command",
    "report": "hpsearch.results.summary:report_command",
    "plot": "hpsearch.results.plots:plot_command",
    "export": "hpsearch.results.export:export_command",
}


DEVICE_HELP = "auto (CUDA when visible), cpu or cuda (default: the config's device)"
SET_HELP = "override a setting; a bare key means params.KEY (repeatable)"


class _Parser(argparse.ArgumentParser):
    """argparse with the project's errors: one line on stderr naming the argument, the value and what
    is allowed, exit status 2; no abbreviated options (``--epoch`` is not taken for ``--epochs``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {_plain(message)}; `{self.prog} --help` lists what is allowed", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        """Unknown arguments are named by the command they were given to, with a close option."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
            parser = commands.get(getattr(parsed, "command", None), self)
            options = [o for action in parser._actions for o in action.option_strings]
            hint = did_you_mean(extra[0].split("=", 1)[0], options) if extra[0].startswith("-") else ""
            parser.error(f"unrecognized argument{'s' if len(extra) > 1 else ''}: {' '.join(extra)}{hint}")
        return parsed


def _plain(message: str) -> str:
    """argparse's message in the project's words where they differ."""
    match = re.fullmatch(r"argument (\S+): invalid int value: (.*)", message)
    if match:
        return f"{match[1]}: got {match[2]}, expected an integer"
    match = re.fullmatch(r"argument COMMAND: invalid choice: '(.*)' \(choose from (.*)\)", message)
    if match:
        return f"got command {match[1]!r}, expected one of {match[2]}{did_you_mean(match[1], HANDLERS)}"
    return message


def _parser() -> argparse.ArgumentParser:
    """The command line; every argument of every command has help text (tests/search/test_api.py)."""
    parser = _Parser(
        prog="hpsearch", description="Hyperparameter search that prunes flatlined, exploding and NaN trials.")
    # read as hpsearch.__version__ reads it: importing that would import hpsearch.api, which the
    # layers keep apart from this module (pyproject.toml)
    parser.add_argument("--version", action="version", version=f"hpsearch {version('hpsearch')}",
                        help="print hpsearch's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do; `hpsearch COMMAND --help` says more")

    p = sub.add_parser("train", help="train one config without Ray")
    p.add_argument("config", help="config YAML (configs/*.yaml or an exported config)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--epochs", type=int, help="override epochs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--out", help="directory for model.pt, config.yaml, metrics.json "
                                 "(default: runs/train/MODEL-DATE-TIME)")
    p.add_argument("--force", action="store_true", help="write into an --out that holds files")

    p = sub.add_parser("evaluate", help="evaluate trained weights (no training)")
    p.add_argument("weights", help="a directory with model.pt + config.yaml, or a model.pt")
    p.add_argument("--split", choices=["val", "test"], default="val",
                   help="which data split to evaluate on (default: val)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")

    p = sub.add_parser("run", help="run a search")
    p.add_argument("config", help="search config YAML")
    p.add_argument("--name", help="run name (a folder under --storage) (default: CONFIG's stem-DATE-TIME)")
    p.add_argument("--storage", help="directory or URI holding runs (default: ./runs)")
    p.add_argument("--address", help="Ray cluster: 'auto', HOST:PORT of the head's GCS, or ray://HOST:PORT "
                                      "(Ray Client: the search runs on the head) (default: a local Ray)")
    p.add_argument("--num-samples", type=int, dest="num_samples", help="override budget.num_samples")
    p.add_argument("--max-epochs", type=int, dest="max_epochs", help="override budget.max_epochs")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)

    p = sub.add_parser("resume", help="continue an interrupted search")
    p.add_argument("run_dir", help="the run directory of the interrupted search (STORAGE/NAME)")
    p.add_argument("--address", help="Ray cluster, as for `run` (with ray://, RUN_DIR is the path on the "
                                      "cluster) (default: a local Ray)")

    p = sub.add_parser("report", help="one row per trial, summary, importances and diagnoses")
    p.add_argument("run_dir", help="a run directory written by `hpsearch run`")
    p.add_argument("--csv", metavar="FILE", help="also write the table (every column) as CSV")
    p.add_argument("--json", metavar="FILE",
                   help="also write the table (every column) and the summary as JSON; "
                        "pandas.read_json(FILE, orient=\"table\", precise_float=True) reads the table back")
    p.add_argument("--all-columns", action="store_true", dest="all_columns",
                   help="print every column, reasons in the table; lines may be wider than the terminal "
                        "(default: the columns that fit its width)")

    p = sub.add_parser("plot", help="learning curves and parameter plots as PNG")
    p.add_argument("run_dir", help="a run directory written by `hpsearch run`")
    p.add_argument("--out", help="directory for the PNGs (default: RUN_DIR/plots)")
    p.add_argument("--force", action="store_true", help="write into an --out that holds files")

    p = sub.add_parser("export", help="best trials' configs and weights")
    p.add_argument("run_dir", help="a run directory written by `hpsearch run`")
    p.add_argument("--top", type=int, default=1, help="how many of the best finished trials (default: 1)")
    p.add_argument("--out", help="directory (default: RUN_DIR/best)")
    p.add_argument("--force", action="store_true", help="write into an --out that holds files")
    return parser


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown. After a refusal nothing was started that needs it
    (files are written in ``with`` blocks), and tearing down an interpreter that imported torch
    takes 0.7-1.2 s on a busy 2-core machine: longer than the checks themselves."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if os.getcwd() not in sys.path:  # `model: mymodule:Factory` from the working directory, as `python -m`
        sys.path.insert(0, os.getcwd())
    module_name, _, func = HANDLERS[args.command].partition(":")
    try:
        handler = getattr(importlib.import_module(module_name), func)
        code = int(handler(args) or 0)
        sys.stdout.flush()              # a reader that left shows here, not at exit
        return code
    except ConfigError as err:
        print(f"hpsearch {args.command}: error: {err}", file=sys.stderr)
        if argv is None and "ray" not in sys.modules:   # the command line itself, and no Ray to stop
            exit_now(2)
        return 2
    except KeyboardInterrupt:
        print(f"hpsearch {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:         # stdout's reader left: `hpsearch report RUN | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        if args.command != "report":                # a listing ends quietly; anything else says so
            print(f"hpsearch {args.command}: stopped: its output was closed (broken pipe)"
                  + ("; `hpsearch resume RUN_DIR` continues the search" if args.command in ("run", "resume") else ""),
                  file=sys.stderr)
        return 141                  # 128 + SIGPIPE, as a shell reports a writer the pipe closed on


if __name__ == "__main__":
    sys.exit(main())
