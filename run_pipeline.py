"""MPANet Edge front door.

Until the streaming pipeline lands, the default job prints the default model's summary
(parameter count and embedding size).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from trainer.cli.info import main as info_main

    return info_main(list(argv) if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
