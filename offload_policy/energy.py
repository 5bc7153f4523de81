"""Energy of one inference on the edge: computing, transmitting, waiting.

energy = compute power x edge compute time
         + radio power(throughput) x transmission time
         + idle power x time waiting for the cloud

Radio power while sending follows the throughput-dependent model of Huang
et al., "A Close Examination of Performance and Power Characteristics of 4G
LTE Networks" (MobiSys 2012): P = alpha_u x uplink Mbit/s + beta, with their
published coefficients for WiFi, LTE and 3G (the radio's tail energy after a
transfer is not counted here). Device power comes from a table of nominal
figures (power-mode budgets) until a sensor measures the real device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgesplit.errors import PolicyError


@dataclass(frozen=True)
class RadioModel:
    """Power of a radio while transmitting, as a function of uplink throughput.

    Attributes:
        name: ``wifi``, ``lte`` or ``3g``.
        alpha_up_mw_per_mbps: extra milliwatts per Mbit/s of uplink throughput.
        alpha_down_mw_per_mbps: extra milliwatts per Mbit/s of downlink throughput.
        beta_mw: base power of the active radio, milliwatts.
    """

    name: str
    alpha_up_mw_per_mbps: float
    alpha_down_mw_per_mbps: float
    beta_mw: float

    def uplink_power_w(self, throughput_bps: float) -> float:
        """Watts drawn while sending at ``throughput_bps``."""
        return (self.alpha_up_mw_per_mbps * throughput_bps / 1e6 + self.beta_mw) / 1000.0


#: Huang et al., MobiSys 2012, the power model's coefficients per network type.
RADIOS: dict[str, RadioModel] = {
    "wifi": RadioModel("wifi", 283.17, 137.01, 132.86),
    "lte": RadioModel("lte", 438.39, 51.97, 1288.04),
    "3g": RadioModel("3g", 868.98, 122.12, 817.88),
}


@dataclass(frozen=True)
class DevicePower:
    """Power of an edge device while computing and while idle, watts."""

    name: str
    compute_w: float
    idle_w: float


#: Nominal figures: Jetson power-mode budgets (nvpmodel) and typical idle draw;
#: replace them with measured power where a sensor exists.
DEVICES: dict[str, DevicePower] = {
    "jetson-nano-5w": DevicePower("jetson-nano-5w", 5.0, 1.25),
    "jetson-nano-10w": DevicePower("jetson-nano-10w", 10.0, 1.25),
    "jetson-xavier-nx-15w": DevicePower("jetson-xavier-nx-15w", 15.0, 2.0),
    "jetson-orin-nano-15w": DevicePower("jetson-orin-nano-15w", 15.0, 2.5),
    "laptop-cpu": DevicePower("laptop-cpu", 25.0, 5.0),
    "phone-soc": DevicePower("phone-soc", 3.0, 0.3),
}


def radio(name: str) -> RadioModel:
    """The radio model ``name``; a clear error for an unknown one."""
    try:
        return RADIOS[name]
    except KeyError:
        raise PolicyError(f"radio {name!r} is unknown; known: {', '.join(RADIOS)}") from None


def device_power(name: str) -> DevicePower:
    """The device power model ``name``; a clear error for an unknown one."""
    try:
        return DEVICES[name]
    except KeyError:
        raise PolicyError(f"device {name!r} is unknown; known: {', '.join(DEVICES)}") from None


def inference_energy_j(
    edge_s: float,
    p_offload: float,
    bytes_sent: float,
    wait_s: float,
    bandwidth_bps: float,
    radio_model: RadioModel,
    device: DevicePower,
) -> float:
    """Expected joules of one inference on the edge.

    Args:
        edge_s: expected edge compute time.
        p_offload: probability that the request is sent to the cloud.
        bytes_sent: bytes sent when it is.
        wait_s: time waiting for the answer once sent (RTT, queue, tail).
        bandwidth_bps: uplink throughput.
        radio_model: the radio's power model.
        device: the device's compute and idle power.
    """
    energy = device.compute_w * edge_s
    if p_offload <= 0:
        return energy
    if bandwidth_bps <= 0:
        return math.inf
    transmit_s = bytes_sent * 8.0 / bandwidth_bps
    energy += p_offload * radio_model.uplink_power_w(bandwidth_bps) * transmit_s
    energy += p_offload * device.idle_w * wait_s
    return energy
