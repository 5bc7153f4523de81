"""The app layer: the ``edgesplit`` command line and the assembly of each role.

Everything below it (the core in :mod:`edgesplit`, ``wire``, ``offload_policy``,
``partitioner``, ``edge_node``, ``cloud_node``, ``experiments``) is imported from
here and nothing imports this package: the CLI modules parse their flags, call one
assembly function (:mod:`edgesplit.app.edge`, :mod:`edgesplit.app.cloud`), print and
return an exit code.
"""
