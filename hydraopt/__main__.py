"""``python -m hydraopt`` is the ``hydraopt`` command."""

from hydraopt.cli import main

main()
