"""``python -m edgesplit``: the same as the ``edgesplit`` command."""

from edgesplit.cli import main

main()
