"""The battery side of the edge node: readings for the policy, joules for each request.

The power monitor is read at most every ``power_interval_s`` (the policy is
told its battery level and charging state); each request's energy comes from
the power model (:mod:`offload_policy.energy`): compute, the radio while
sending, idle while waiting. The monitor is told those joules (a simulated
battery drains by them, a sensor leaves them aside).
"""

from __future__ import annotations

import math

from edge_node.metrics import EdgeMetrics
from edge_node.power_monitor import PowerMonitor, PowerReading
from offload_policy.energy import device_power, radio


class EnergyAccount:
    """Readings of ``monitor`` (``None``: mains, nothing to read) and joules by the model.

    Args:
        monitor: the power monitor, or ``None``.
        radio_model: the uplink's radio power model (``wifi``, ``lte``, ``3g``).
        device_model: the device's power model (e.g. ``jetson-nano-10w``).
        interval_s: the shortest time between two reads of the monitor, seconds.
        metrics: where readings are shown (``battery``, ``power``).
    """

    def __init__(
        self,
        monitor: PowerMonitor | None,
        radio_model: str,
        device_model: str,
        interval_s: float,
        metrics: EdgeMetrics,
    ) -> None:
        self.monitor = monitor
        self._radio = radio(radio_model)
        self._device = device_power(device_model)
        self._interval_s = interval_s
        self._metrics = metrics
        self._reading: PowerReading | None = None
        self._read_at = -math.inf

    def reading(self, now: float) -> PowerReading | None:
        """The latest reading, read again when ``interval_s`` passed since the last."""
        if self.monitor is None:
            return None
        if now - self._read_at >= self._interval_s:
            reading = self.monitor.read(now)
            self._reading, self._read_at = reading, now
            level, watts = reading.battery_level, reading.power_w
            self._metrics.battery.set(math.nan if level is None else level)
            self._metrics.power.set(math.nan if watts is None else watts)
        return self._reading

    def joules(
        self, compute_s: float, bytes_sent: int, latency_s: float, bandwidth_bps: float
    ) -> float:
        """Joules by the power model: compute, radio while sending, idle while waiting."""
        energy = self._device.compute_w * compute_s
        if bytes_sent:
            transmit = bytes_sent * 8.0 / bandwidth_bps
            energy += self._radio.uplink_power_w(bandwidth_bps) * transmit
            energy += self._device.idle_w * max(0.0, latency_s - compute_s - transmit)
        return energy

    def spend(self, joules: float) -> None:
        """Tell the monitor the joules one request took."""
        if self.monitor is not None:
            self.monitor.spend(joules)


__all__ = ["EnergyAccount"]
