"""The client's circuit breaker.

``threshold`` consecutive failed publishes open it: publishes then fail at
once with CircuitBreakerOpen. Once ``timeout`` seconds have passed it is
half-open: one trial publish goes through (the others still fail at once);
its success closes the breaker, its failure opens it for another timeout.
Errors of the caller (invalid arguments, payload too large) are no failures
of the service and never count. Runs on the event loop thread only.
"""

from __future__ import annotations

import enum
import time
from typing import Callable, Optional


class State(enum.IntEnum):
    #: The value of the ``<prefix>_circuit_breaker_state`` gauge.
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Breaker:
    def __init__(
        self,
        threshold: int,
        timeout: float,
        on_change: Optional[Callable[[State], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.timeout = timeout
        self._on_change = on_change
        self._clock = clock
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.timeout:
            self._set(State.HALF_OPEN)
        return self._state

    def admit(self) -> bool:
        """May a publish go through now? A True in half-open state makes that
        publish the trial: it must end in success() or failure()."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._trial = False
        if self._state is not State.CLOSED:
            self._set(State.CLOSED)

    def failure(self) -> None:
        self._trial = False
        self._failures += 1
        if self._state is State.HALF_OPEN or self._failures >= self.threshold:
            self._opened_at = self._clock()
            self._set(State.OPEN)

    def release(self) -> None:
        """A publish that neither succeeded nor failed the service (e.g. an
        invalid argument, or cancelled): a trial slot is given back."""
        self._trial = False

    def _set(self, state: State) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
