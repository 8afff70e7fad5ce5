"""``python -m trainer.synthetic``: see :mod:`trainer.synthetic.cli`."""

from trainer.synthetic.cli import main

raise SystemExit(main())
