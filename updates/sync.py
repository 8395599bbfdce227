"""Which compiled steps hold values on a device that their shared variables have not seen.

A device step (:class:`updates.Step` in JAX mode) keeps its params and state on the device and
writes them back only when asked. Everything that reads or writes shared variables on the host
(``named_state``, :func:`updates.save_state`, :func:`updates.swap_averages` ...) first calls
:func:`sync_variables` on the variables it touches; the step marks itself with
:func:`mark_unsynced` after each call and :func:`mark_synced` once written back. This module is
that registry and its three functions, nothing else.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["mark_synced", "mark_unsynced", "sync_variables"]


class DeviceStep(Protocol):
    """What the registry needs of a step: the ids of the variables it updates, and ``sync()``."""

    updated_ids: set[int]

    def sync(self) -> None: ...


#: The steps whose device holds values their shared variables have not seen yet.
_UNSYNCED: weakref.WeakSet = weakref.WeakSet()


def mark_unsynced(step: DeviceStep) -> None:
    """``step``'s device now holds values its shared variables have not seen."""
    _UNSYNCED.add(step)


def mark_synced(step: DeviceStep) -> bool:
    """``step`` is about to write its values back; False if it had nothing to write."""
    if step not in _UNSYNCED:
        return False
    _UNSYNCED.discard(step)
    return True


def sync_variables(variables: Iterable[Any], but: DeviceStep | None = None) -> None:
    """Sync every step (but ``but``) that holds the current value of one of ``variables``."""
    others = [step for step in _UNSYNCED if step is not but]
    if not others:  # the common case, every call of a step: nothing to build
        return
    wanted = set(map(id, variables))
    for step in others:
        if not step.updated_ids.isdisjoint(wanted):
            step.sync()
