"""``python -m edgesplit``: the same as the ``edgesplit`` command."""

from edgesplit.app.cli import main

main()
