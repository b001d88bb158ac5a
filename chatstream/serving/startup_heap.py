"""Keep the cyclic garbage collector off the start-up heap while a ChatStream serves.

A serving process holds torch, transformers and the model: a few hundred thousand objects that live as long as
the process. Every full (generation 2) collection walks all of them: about 70 ms with the bundled model, far
more with a real model's stack, during which every stream on the event loop stops. Requests keep objects alive
long enough to be promoted (sessions, histories), so full collections come every few seconds under load: the
per-round throughput of ``bench/bench_serving.py`` was bimodal, a third of its rounds ~20% slower.

``hold()`` (a ChatStream starts serving) freezes what is alive (``gc.freeze``: moved to a permanent generation
that collections skip; reference counting still frees it); objects made afterwards are collected as usual.
``release()`` (it stops) unfreezes them, so garbage frozen with the living is collected after the stop. The
first ``hold`` of the process collects before it freezes (a server's start: what model loading left behind
must not be kept for the server's life); later ones do not, as a full collection takes 0.1-0.2 s in a test
process and a test suite starts a ChatStream per test: what they freeze is kept until their stop at most.
Several ChatStreams in one process share one freeze: the first ``hold`` makes it, the last ``release`` undoes
it. A heap frozen by someone else (a pre-fork server's ``gc.freeze()``), before the start or while serving,
is left as it is: nothing more is frozen over it, and nothing is unfrozen under it. vLLM freezes
its heap after start-up for the same reason (``vllm.utils.gc_utils.freeze_gc_heap``).
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0
_collected = False  # whether this process collected before a freeze already
# the objects our freeze in place froze, 0 when none is ours to undo (fewer later, as frozen objects die; more:
# someone else froze too)
_frozen = 0


def hold() -> None:
    """One more ChatStream serves in this process; the first freezes the heap (the process's first freeze after
    a full collection)."""
    global _holders, _collected, _frozen
    with _lock:
        if _holders == 0 and gc.isenabled() and gc.get_freeze_count() == 0:  # a freeze of someone else's: left be
            if not _collected:
                gc.collect()  # garbage frozen now would be kept until release(): the whole life of a server
                _collected = True
            gc.freeze()
            _frozen = gc.get_freeze_count()
        _holders += 1


def release() -> None:
    """A ChatStream stopped serving; the last one unfreezes the heap (when it froze it)."""
    global _holders, _frozen
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0 and _frozen:
            if gc.get_freeze_count() <= _frozen:  # grown: someone froze meanwhile, and unfreezing would undo theirs
                gc.unfreeze()
            _frozen = 0


def holders() -> int:
    """How many ChatStreams of this process hold the freeze now."""
    return _holders
