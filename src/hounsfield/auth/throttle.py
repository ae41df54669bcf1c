"""Failed logins, counted per user name and per address, so that guessing passwords is slow (issue 12;
OWASP's Authentication Cheat Sheet: lock out for a while after a few failures, per account and per source).

After ``max_failures`` failures of a user name within ``lockout`` seconds of each other, that name is refused
until ``lockout`` seconds after its last failure; an address gets ``ADDRESS_FACTOR`` times as many (the users
of one ward, or behind one NAT, share it). A success clears the user name's count, not the address's: an
attacker who knows one password must not reset the count for the others he guesses. Kept in memory: a
restart forgets it, which costs an attacker a restart of the server per ``max_failures`` guesses."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable


ADDRESS_FACTOR = 5


class LoginThrottle:
    def __init__(self, max_failures: int, lockout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max(1, max_failures)
        self.lockout = lockout
        self.clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # key → (count, time of the last failure)
        self._lock = threading.Lock()

    @staticmethod
    def keys(user_name: str, address: str) -> tuple[str, str]:
        return f"user:{user_name.lower()}", f"address:{address}"

    def _limit(self, key: str) -> int:
        return self.max_failures * (ADDRESS_FACTOR if key.startswith("address:") else 1)

    def wait_for(self, keys: Iterable[str]) -> float:
        """Seconds until all of ``keys`` may try again (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [self._failures[k][1] + self.lockout - now for k in keys
                     if self._failures.get(k, (0, 0.0))[0] >= self._limit(k)]
        return max([w for w in waits if w > 0], default=0.0)

    def failed(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > 100000:  # a flood of names: forget the stale ones
                self._failures = {k: v for k, v in self._failures.items() if now - v[1] < self.lockout}
            for key in keys:
                count, last = self._failures.get(key, (0, now))
                self._failures[key] = (1 if now - last >= self.lockout else count + 1, now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
