"""Finding a cluster: by name in the store, or from a spec file (validated, then recorded)."""

from __future__ import annotations

from pathlib import Path

from metalctl import lifecycle
from metalctl.errors import UsageError
from metalctl.paths import ClusterPaths, write_public
from metalctl.spec import ClusterSpec, load_spec_file, parse_spec
from metalctl.store import Store


def load_cluster(store: Store, name: str | None, spec_file: Path | None) -> ClusterSpec:
    """Return the spec of ``--cluster NAME`` or ``-f FILE``.

    A spec file is validated completely before anything is written; only then is it
    recorded (new nodes as ``ready``: the static provisioner takes machines that
    already have an OS and an SSH login).
    """
    if (name is None) == (spec_file is None):
        raise UsageError("give exactly one of --cluster NAME or -f/--file cluster.yaml")
    if name is not None:
        record = store.get_cluster(name)
        return parse_spec(record.spec_yaml, source=f"of cluster '{name}' in the store")
    assert spec_file is not None
    spec = load_spec_file(spec_file)
    lifecycle.register_cluster(
        store, spec, initial_state=lifecycle.READY, reason=f"registered from {spec_file}"
    )
    write_public(ClusterPaths.for_cluster(spec.name).spec, spec.to_yaml())
    return spec
