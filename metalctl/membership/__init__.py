"""Day-2 membership: Consul registrations decide who is in the swarm.

``quorum`` holds the Raft arithmetic and the removal gate, ``plan`` the pure decision core
(desired vs actual -> actions). The controller that reads Consul and Swarm and executes the
actions builds on these; nothing here does I/O.
"""

from metalctl.conventions import Registration
from metalctl.membership.plan import (
    Action,
    Event,
    Memory,
    NodeMemory,
    Plan,
    Policy,
    SwarmMember,
    plan,
)
from metalctl.membership.quorum import QuorumVerdict, fault_tolerance, needed, removal_check

__all__ = [
    "Action",
    "Event",
    "Memory",
    "NodeMemory",
    "Plan",
    "Policy",
    "QuorumVerdict",
    "Registration",
    "SwarmMember",
    "fault_tolerance",
    "needed",
    "plan",
    "removal_check",
]
