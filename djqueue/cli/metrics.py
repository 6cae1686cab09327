"""``celery metrics``: the Prometheus metrics, printed or written for node-exporter's textfile
collector (``djqueue[prometheus]``)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any, TextIO

HELP = "Print the Prometheus metrics, or write them to a file for node-exporter (--textfile)."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--textfile", metavar="PATH",
        help="write the metrics to PATH (replaced atomically: written beside it, then renamed); "
             "node-exporter's textfile collector reads files ending in .prom")


def run(options: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    try:
        # prometheus_client is an optional extra: loaded here, so that every other subcommand
        # (which the management command loads to build its parser) works without it.
        from prometheus_client import write_to_textfile
        # The same reason: djqueue.contrib.prometheus imports prometheus_client.
        from ..contrib.prometheus import exposition, registry
    except ImportError as exc:
        stderr.write(f"Error: {exc}. Install it with: pip install 'djqueue[prometheus]'\n")
        return 1
    path = options.get("textfile")
    if not path:
        stdout.write(exposition().decode())
        return 0
    try:
        write_to_textfile(path, registry())
    except OSError as exc:
        stderr.write(f"Error: cannot write {path}: {exc.strerror or exc}\n")
        return 1
    return 0
