"""The store's record of machines seen by the boot service."""

from __future__ import annotations

import pytest

from metalctl.errors import ConflictError, NotFoundError
from metalctl.store import Store
from tests.integration.boot_support import MAC_A, MAC_A2, MAC_B, UUID_A, facts


def _machine_events(store: Store) -> list[tuple[str | None, str | None]]:
    return [(e.from_state, e.to_state) for e in store.list_events("") if e.kind == "machine"]


def test_first_report_creates_a_discovered_machine_with_an_event(store: Store) -> None:
    machine = store.upsert_discovered(facts(MAC_A, MAC_A2), boot_mac=MAC_A2)
    assert machine.id.startswith("m-") and len(machine.id) == 14
    assert machine.state == "discovered" and machine.cluster is None and machine.node is None
    assert machine.primary_mac == MAC_A2 and machine.macs == (MAC_A, MAC_A2)
    assert machine.smbios_uuid == UUID_A and machine.serial == "S1"
    assert machine.facts == facts(MAC_A, MAC_A2)
    assert machine.first_seen == machine.last_seen
    assert _machine_events(store) == [(None, "discovered")]


def test_a_machine_is_found_by_its_id_or_any_of_its_macs(store: Store) -> None:
    made = store.upsert_discovered(facts(MAC_A, MAC_A2))
    for key in (made.id, MAC_A, MAC_A2.upper(), MAC_A2.replace(":", "-")):
        assert store.get_machine(key).id == made.id
    assert store.find_machine(MAC_B) is None
    with pytest.raises(NotFoundError, match=MAC_B):
        store.get_machine(MAC_B)


def test_reports_by_uuid_or_other_nic_update_one_machine(store: Store) -> None:
    made = store.upsert_discovered(facts(MAC_A, MAC_A2))
    store.upsert_discovered(facts(MAC_A2, memory=1))  # one NIC in common
    updated = store.upsert_discovered(facts(MAC_B, memory=2))  # only the UUID in common
    assert [m.id for m in store.list_machines()] == [made.id]
    assert updated.facts["memory_bytes"] == 2 and updated.macs == (MAC_B,)
    assert updated.primary_mac == MAC_B and updated.first_seen == made.first_seen
    assert updated.last_seen >= made.last_seen
    assert store.find_machine(MAC_A) is None  # its NIC left the machine, so did the MAC
    assert len(_machine_events(store)) == 3


def test_placeholder_uuids_identify_nothing(store: Store) -> None:
    zero = "00000000-0000-0000-0000-000000000000"
    store.upsert_discovered(facts(MAC_A, uuid=zero))
    store.upsert_discovered(facts(MAC_B, uuid=zero.upper()))
    machines = store.list_machines()
    assert len(machines) == 2 and {m.smbios_uuid for m in machines} == {None}


def test_a_report_matching_two_machines_is_refused_whole(store: Store) -> None:
    store.upsert_discovered(facts(MAC_A, uuid=None))
    store.upsert_discovered(facts(MAC_B, uuid="11111111-2222-3333-4444-555555555555"))
    before = (store.list_machines(), store.list_events(""))
    with pytest.raises(ConflictError, match="several known machines"):
        store.upsert_discovered(facts(MAC_A, MAC_B, uuid=None))
    with pytest.raises(ConflictError, match="SMBIOS UUID"):
        store.upsert_discovered(facts(MAC_B, uuid="99999999-2222-3333-4444-555555555555"))
    assert (store.list_machines(), store.list_events("")) == before


def test_a_refusal_inside_a_discovery_stores_nothing(store: Store) -> None:
    class Refusal(Exception):
        pass

    with pytest.raises(Refusal), store.discovery(facts(MAC_A)) as attempt:
        assert attempt.machine is None and attempt.macs == (MAC_A,)
        raise Refusal
    assert store.list_machines() == [] and store.list_events("") == []


def test_states_enrolment_and_forgetting(store: Store) -> None:
    store.upsert_discovered(facts(MAC_A))
    store.upsert_discovered(facts(MAC_B, uuid=None))
    enrolled = store.set_machine_state(MAC_A, "enrolled", "test", cluster="rack1", node="n1")
    assert (enrolled.state, enrolled.cluster, enrolled.node) == ("enrolled", "rack1", "n1")
    assert [m.primary_mac for m in store.list_machines("enrolled")] == [MAC_A]
    assert [m.primary_mac for m in store.list_machines("discovered")] == [MAC_B]
    with pytest.raises(ValueError, match="machine state"):
        store.set_machine_state(MAC_A, "active", "test")
    store.forget_machine(MAC_B, "test")
    assert [m.primary_mac for m in store.list_machines()] == [MAC_A]
    assert _machine_events(store)[-2:] == [("discovered", "enrolled"), ("discovered", None)]
    # A forgotten machine's NIC is free for a new machine.
    assert store.upsert_discovered(facts(MAC_B, uuid=None)).state == "discovered"


def test_boot_mac_must_be_one_of_the_nics(store: Store) -> None:
    with pytest.raises(ValueError, match="not among"):
        store.upsert_discovered(facts(MAC_A), boot_mac=MAC_B)
