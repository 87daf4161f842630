"""Execution ids: UUIDv7, so that ids sort by creation time."""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["new_execution_id"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_execution_id() -> str:
    """A UUIDv7 string (RFC 9562): 48 bits of milliseconds, then randomness.

    Within one millisecond a 12-bit counter keeps ids from one process in
    order; the remaining 62 bits are random, so processes never collide.
    """
    global _last_ms, _counter

    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:
                # Borrow the next millisecond rather than lose the order.
                _last_ms += 1
                _counter = 0
            now_ms = _last_ms
        else:
            _last_ms = now_ms
            _counter = 0
        counter = _counter

    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (now_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand
    return str(uuid.UUID(int=value))
