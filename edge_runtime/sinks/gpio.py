"""Drive a GPIO pin while a chosen label is the current one: a reject gate, a lamp, a relay.

The pin follows the pipeline's events (debounced label changes): it switches on when the chosen
label is announced, stays on while it remains the current label, and holds for ``hold_s`` after
that, so even a brief detection gives the actuator a pulse long enough to move.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from edge_runtime.errors import ConfigError, SinkError
from edge_runtime.registry import require
from edge_runtime.sinks.base import Flag, Sink, SinkConfig, SinkContext, StatusProvider
from edge_runtime.types import Frame, Prediction

log = logging.getLogger(__name__)


class GateLogic:
    """When the pin should be on (pure: no hardware, the caller passes the time).

    On while the current event label is ``label``, and for ``hold_s`` seconds after an event
    replaced it.
    """

    def __init__(self, label: str, hold_s: float) -> None:
        if hold_s < 0:
            raise ConfigError(f"the GPIO hold time must not be negative, got {hold_s}")
        self.label = label
        self.hold_s = hold_s
        self.current: str | None = None
        self._ended_at: float | None = None

    def update(self, prediction: Prediction | None, now: float) -> bool:
        """Take a prediction (None: just time passing) and say whether the pin should be on."""
        if prediction is not None and prediction.event:
            if self.current == self.label and prediction.label != self.label:
                self._ended_at = now
            self.current = prediction.label
        return self.active(now)

    def active(self, now: float) -> bool:
        """Whether the pin should be on at ``now``."""
        if self.current == self.label:
            return True
        return self._ended_at is not None and now - self._ended_at < self.hold_s

    def release_at(self) -> float | None:
        """When the hold ends, once the label is no longer current; None otherwise."""
        if self.current == self.label or self._ended_at is None:
            return None
        return self._ended_at + self.hold_s


class GpioConfig(SinkConfig):
    """``[outputs] gpio``: drive a pin while a label is the current result (e.g. a reject
    gate), as ``gpio = { pin = 17, label = "counterfeit", hold_s = 1.5 }``."""

    key = "gpio"
    flags = (
        Flag(("--gpio-pin",), "pin", "drive this GPIO pin on --gpio-label", "PIN"),
        Flag(("--gpio-label",), "label", "label that switches the pin on", "LABEL"),
    )

    pin: int | str = Field(description="BCM pin number or gpiozero pin name (17, GPIO17).")
    label: str = Field(min_length=1, description="The label that switches the pin on.")
    hold_s: float = Field(1.0, ge=0, description="Seconds the pin stays on after the label ends.")
    active_high: bool = Field(True, description="False for relays that switch on a low level.")
    fail_safe: Literal["on", "off"] | None = Field(
        None,
        description="The pin's level while decisions are missing (no fresh confident decision "
        "for [service] stale_after_s, a model that failed to load, the daemon stopping), e.g. "
        "'on' when on means the kiosk's gate stays closed. Wire the actuator so that a "
        "released pin (after the process ends) is safe too.",
    )

    @field_validator("pin")
    @classmethod
    def _number_when_digits(cls, value: int | str) -> int | str:
        # "17" from the command line or a quoted TOML value is BCM pin 17, as gpiozero reads 17.
        return int(value) if isinstance(value, str) and value.isdigit() else value

    def build(self, context: SinkContext) -> list[Sink]:
        return [
            GpioSink(
                self.pin,
                self.label,
                hold_s=self.hold_s,
                active_high=self.active_high,
                fail_safe=self.fail_safe,
            )
        ]


class GpioSink(Sink):
    """Switches a pin on while ``label`` is the current event label (plus ``hold_s``).

    Options: ``pin`` (a gpiozero pin name or BCM number, e.g. 17 or "GPIO17"), ``label``,
    ``hold_s`` (default 1.0), ``active_high`` (False for relays that switch on a low level),
    ``pin_factory`` (a gpiozero pin factory, e.g. ``MockFactory()`` in tests; default: gpiozero's),
    ``fail_safe`` (``"on"`` or ``"off"``: the level held while in the fail-safe state, see
    ``Sink.enter_fail_safe``), ``clock`` (tests).

    Raises (from ``open``):
        MissingDependencyError: gpiozero is not installed.
        SinkError: the pin cannot be claimed.
    """

    name = "gpio"
    Config = GpioConfig

    def __init__(
        self,
        pin: int | str,
        label: str,
        *,
        hold_s: float = 1.0,
        active_high: bool = True,
        pin_factory: Any = None,
        fail_safe: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fail_safe not in (None, "on", "off"):
            raise ConfigError(f"the GPIO fail-safe level is 'on' or 'off', got '{fail_safe}'")
        if not label:
            raise ConfigError("the GPIO sink needs the label that drives the pin (--gpio-label)")
        self.pin = pin
        self.logic = GateLogic(label, hold_s)
        self.active_high = active_high
        self.pin_factory = pin_factory
        self._clock = clock
        self._device: Any = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._timer_due: float | None = None
        self.switches = 0
        self.fail_safe = fail_safe
        self._held: str | None = None  # the fail-safe reason while held

    def open(self, status: StatusProvider | None = None) -> None:
        if self._device is not None:
            return
        gpiozero = require("gpiozero", "rpi", "the GPIO sink")
        try:
            self._device = gpiozero.DigitalOutputDevice(
                self.pin,
                active_high=self.active_high,
                initial_value=False,
                pin_factory=self.pin_factory,
            )
        except gpiozero.GPIOZeroError as exc:
            raise SinkError(f"cannot drive GPIO pin {self.pin}: {exc}") from exc

    @property
    def is_on(self) -> bool:
        """Whether the output is switched on now."""
        return bool(self._device is not None and self._device.value)

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        if self._device is None:
            self.open()
        with self._lock:
            self._apply(self.logic.update(prediction, self._clock()))

    def _apply(self, on: bool) -> None:
        device = self._device
        if device is None:
            return
        if self._held is not None:
            on = self.fail_safe == "on"
        if on != bool(device.value):
            device.on() if on else device.off()
            self.switches += 1
            log.info("GPIO %s %s (label %s)", self.pin, "on" if on else "off", self.logic.current)
        self._schedule_release()

    def _schedule_release(self) -> None:
        # Frames may stop coming (end of a stream, a stalled camera): a timer ends the hold anyway.
        release_at = self.logic.release_at() if self.is_on else None
        if release_at == self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = release_at
        if release_at is None:
            return
        delay = max(0.0, release_at - self._clock())
        self._timer = threading.Timer(delay, self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer, self._timer_due = None, None
            self._apply(self.logic.update(None, self._clock()))

    def enter_fail_safe(self, reason: str) -> None:
        if self.fail_safe is None:
            return
        with self._lock:
            if self._held is None:
                log.warning("GPIO %s: fail-safe %s (%s)", self.pin, self.fail_safe, reason)
            self._held = reason
            self._apply(self.fail_safe == "on")

    def leave_fail_safe(self) -> None:
        with self._lock:
            if self._held is None:
                return
            self._held = None
            log.info("GPIO %s: leaving the fail-safe state", self.pin)
            self._apply(self.logic.active(self._clock()))

    @property
    def held(self) -> bool:
        """Whether the pin is held in its fail-safe level."""
        return self._held is not None

    def close(self) -> None:
        """Release the pin: switched off first, unless it is held at its fail-safe level."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            device, self._device = self._device, None
            held = self._held is not None
        if device is not None:
            if not held:
                device.off()
            device.close()
