"""Scripts that reproduce the field's latency and energy curves (one command each).

Each experiment writes CSV, PNG and a short markdown report into a results folder.
"""
