"""``python -m edge.linking --config configs/linker.yaml [key=value ...]``: run the linker service.

Exit status 0 after a clean stop (SIGTERM, SIGINT, or every expected producer ended), 2 for a bad
configuration (unknown key, a state_dir that is a file, a missing key or engine file, a port that
cannot be bound), 3 for a state directory damaged in a way a crash cannot explain (the message
names the file and the offset). Each is one line on stderr, not a traceback. The fully resolved
config is written to ``<state_dir>/linker_config.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from common.configuring import ConfigError, config_to_yaml, load_config, save_resolved_config
from edge.linking.config import LinkerConfig


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.linking",
        description="The linker: global identities across cameras and modalities from edge-node sightings.",
    )
    parser.add_argument("--config", action="append", default=[], help="YAML file (repeatable, later wins)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. matching.cosine_min_cross=0.35"
    )
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(LinkerConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config_to_yaml(config), end="")
        return 0
    from edge.linking.persistence import JournalError
    from edge.linking.service import LinkerService
    from edge.transport import TransportError

    state_dir = Path(config.persistence.state_dir)
    if state_dir.exists() and not state_dir.is_dir():
        print(f"error: persistence.state_dir {state_dir} is a file, not a directory", file=sys.stderr)
        return 2
    try:
        save_resolved_config(config, state_dir / "linker_config.yaml")
    except OSError as exc:
        print(f"error: cannot write to persistence.state_dir {state_dir}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        LinkerService(config, stop).run()
    except (ConfigError, TransportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except JournalError as exc:
        print(f"error: the linker's state is damaged: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
