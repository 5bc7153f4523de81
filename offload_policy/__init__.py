"""Pure decision logic: what to run where, from observations and the bundle's profiles.

No sockets, no files, no hidden clocks: time is passed in.
"""

from offload_policy.cost import predict
from offload_policy.static import FixedPolicy, best_static_decision, rank_cuts
from offload_policy.types import Decision, Observation, Prediction

__all__ = [
    "Decision",
    "FixedPolicy",
    "Observation",
    "Prediction",
    "best_static_decision",
    "predict",
    "rank_cuts",
]
