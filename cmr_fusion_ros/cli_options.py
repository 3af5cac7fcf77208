"""Options several commands share, spelled the same everywhere: ``--params-file`` (ROS users' spelling; ``--params``
stays an alias), ``--no-progress`` (every command that draws a progress bar) and ``--look-ahead`` (``process`` and
``bench offline``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_look_ahead", "add_params_file", "add_no_progress", "look_ahead_value", "progress_bar"]


def add_params_file(parser: Any, help: str, **kwargs: Any) -> None:
    """``--params-file FILE`` (alias ``--params``) into ``args.params``."""
    parser.add_argument("--params-file", "--params", dest="params", type=Path, default=None, metavar="FILE",
                        help=help, **kwargs)


def add_no_progress(parser: Any) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="draw no progress bar (logs, CI); results are printed as without it")


def add_look_ahead(parser: Any) -> None:
    """``--look-ahead N`` of offline processing (``bag.offline.process_bags``) into ``args.look_ahead``."""
    from cmr_fusion_ros.bag.offline import DEFAULT_LOOK_AHEAD

    parser.add_argument("--look-ahead", type=look_ahead_value, default=DEFAULT_LOOK_AHEAD, metavar="N",
                        help="sensor messages decoded, and frames embedded, ahead of the in-order search + insert, in "
                             "a worker process per topic, so the stages overlap on several cores (0 = everything in "
                             "one process; the events and the memory are the same for every N; default "
                             f"{DEFAULT_LOOK_AHEAD})")


def look_ahead_value(text: str) -> int:
    """``--look-ahead``: an integer in 0..MAX_LOOK_AHEAD."""
    from cmr_fusion_ros.bag.offline import MAX_LOOK_AHEAD

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_LOOK_AHEAD:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer in 0..{MAX_LOOK_AHEAD}")
    return value


def progress_bar(args: argparse.Namespace, **kwargs: Any):
    """A tqdm bar on stderr, drawn unless ``--no-progress``."""
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    return tqdm(disable=bool(getattr(args, "no_progress", False)), **kwargs)
