"""Options several commands share, spelled the same everywhere: ``--params-file`` (ROS users' spelling; ``--params``
stays an alias) and ``--no-progress`` (every command that draws a progress bar)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_params_file", "add_no_progress", "progress_bar"]


def add_params_file(parser: Any, help: str, **kwargs: Any) -> None:
    """``--params-file FILE`` (alias ``--params``) into ``args.params``."""
    parser.add_argument("--params-file", "--params", dest="params", type=Path, default=None, metavar="FILE",
                        help=help, **kwargs)


def add_no_progress(parser: Any) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="draw no progress bar (logs, CI); results are printed as without it")


def progress_bar(args: argparse.Namespace, **kwargs: Any):
    """A tqdm bar on stderr, drawn unless ``--no-progress``."""
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    return tqdm(disable=bool(getattr(args, "no_progress", False)), **kwargs)
