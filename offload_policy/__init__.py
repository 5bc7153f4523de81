"""Pure decision logic: what to run where, from observations and the bundle's profiles.

No sockets, no files, no hidden clocks: time is passed in.
"""

from offload_policy.adaptive import AdaptivePolicy, PolicyConfig, PolicyState
from offload_policy.baselines import Edgent, StaticPolicy, cloud_only, edge_only, neurosurgeon
from offload_policy.battery import Battery, energy_budget_j
from offload_policy.corrections import CorrectionConfig, CorrectionFactors, Corrections
from offload_policy.cost import (
    Branch,
    Terms,
    branches,
    decision_terms,
    default_accuracy_floor,
    predict,
    whole_model_accuracy,
)
from offload_policy.energy import DEVICES, RADIOS, DevicePower, RadioModel, inference_energy_j
from offload_policy.static import FixedPolicy, best_static_decision, rank_cuts
from offload_policy.table import DecisionTable
from offload_policy.types import Decision, Observation, Policy, Prediction

__all__ = [
    "DEVICES",
    "RADIOS",
    "AdaptivePolicy",
    "Battery",
    "Branch",
    "CorrectionConfig",
    "CorrectionFactors",
    "Corrections",
    "Decision",
    "DecisionTable",
    "DevicePower",
    "Edgent",
    "FixedPolicy",
    "Observation",
    "Policy",
    "PolicyConfig",
    "PolicyState",
    "Prediction",
    "RadioModel",
    "StaticPolicy",
    "Terms",
    "best_static_decision",
    "branches",
    "cloud_only",
    "decision_terms",
    "default_accuracy_floor",
    "edge_only",
    "energy_budget_j",
    "inference_energy_j",
    "neurosurgeon",
    "predict",
    "rank_cuts",
    "whole_model_accuracy",
]
