"""cohort.redis: coordination of processes and machines through a Redis server.

An optional layer (``pip install 'cohort[redis]'``, redis-py >= 5), not
imported by ``import cohort``. A :class:`Coordinator` bound to a server and a
namespace creates named primitives that every process naming them shares:
``Lock`` (a lease renewed in the background, a fencing token per grant; a lost
lease cancels the holder's block and raises :class:`cohort.LeaseLost`) and
``Barrier`` (cyclic; a party whose lease lapses breaks it for every waiter).
Leases are timed by the server's clock; an unreachable or restarted server
surfaces as :class:`cohort.CoordinatorLost` within a bounded time.
"""

from __future__ import annotations

from cohort._exceptions import CoordinatorLost, LeaseLost
from cohort._public import publish as _publish
from cohort.redis._barrier import Barrier
from cohort.redis._coordinator import Coordinator
from cohort.redis._flags import EventFlags
from cohort.redis._group import Group, GroupDecided, Member
from cohort.redis._latch import Latch
from cohort.redis._lease import Lease
from cohort.redis._lock import Lock, RWLock, Semaphore

__all__ = [
    "Barrier",
    "Coordinator",
    "CoordinatorLost",
    "EventFlags",
    "Group",
    "GroupDecided",
    "Latch",
    "Lease",
    "LeaseLost",
    "Lock",
    "Member",
    "RWLock",
    "Semaphore",
]

_OWN = [n for n in __all__ if n not in ("CoordinatorLost", "LeaseLost")]  # those are cohort's
_publish(globals(), "cohort.redis", _OWN)
