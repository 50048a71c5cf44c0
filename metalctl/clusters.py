"""Finding a cluster: by name in the store, or from a spec file (validated, then recorded)."""

from __future__ import annotations

import difflib
from pathlib import Path

from metalctl import lifecycle, provisioners
from metalctl.deploy.workload import DEFAULT_WORKLOAD, load_workload
from metalctl.errors import ConflictError, UsageError
from metalctl.paths import ClusterPaths, write_public
from metalctl.spec import ClusterSpec, load_spec_file, parse_spec
from metalctl.store import Store

MAX_DIFF_LINES = 60
# Nodes that are (or are becoming) swarm members: a spec may not silently drop them.
_IN_CLUSTER = {lifecycle.DEPLOYING, lifecycle.ACTIVE, lifecycle.LEAVING}


def load_cluster(
    store: Store, name: str | None, spec_file: Path | None, *, replace: bool = False
) -> ClusterSpec:
    """Return the spec of ``--cluster NAME`` or ``-f FILE``.

    A spec file is validated completely before anything is written, then enrolled by its
    provisioner (which decides the state new nodes start in). A file whose cluster is
    already known with a different spec is refused with the difference, unless
    ``replace``: then the file's spec wins and nodes it no longer lists are forgotten
    (refused for nodes still in the swarm: 'nodes remove' them first).
    """
    if (name is None) == (spec_file is None):
        raise UsageError("give exactly one of --cluster NAME or -f/--file cluster.yaml")
    if name is not None:
        record = store.get_cluster(name)
        return parse_spec(record.spec_yaml, source=f"of cluster '{name}' in the store")
    assert spec_file is not None
    spec = load_spec_file(spec_file)
    provisioners.check_known(spec.spec.provisioner, str(spec_file))
    load_workload(DEFAULT_WORKLOAD).check(spec)
    _check_replacement(store, spec, spec_file, replace)
    provisioners.get(spec.spec.provisioner).enroll(
        store, spec, f"registered from {spec_file}", replace=replace
    )
    write_public(ClusterPaths.for_cluster(spec.name).spec, spec.to_yaml())
    return spec


def _check_replacement(store: Store, spec: ClusterSpec, source: Path, replace: bool) -> None:
    known = {c.name: c for c in store.list_clusters()}
    if spec.name not in known or known[spec.name].spec_yaml == spec.to_yaml():
        return
    if not replace:
        diff = difflib.unified_diff(
            known[spec.name].spec_yaml.splitlines(),
            spec.to_yaml().splitlines(),
            f"cluster {spec.name} (in the store)",
            str(source),
            lineterm="",
        )
        lines = list(diff)
        if len(lines) > MAX_DIFF_LINES:
            lines = [*lines[:MAX_DIFF_LINES], f"... ({len(lines) - MAX_DIFF_LINES} more lines)"]
        raise ConflictError(
            f"cluster '{spec.name}' is already known with a different spec:\n" + "\n".join(lines),
            hint=f"add --replace to make {source} the cluster's spec, or use "
            f"--cluster {spec.name} for the stored one",
        )
    listed = {n.name for n in spec.nodes}
    busy = [
        f"{n.name} ({n.state})"
        for n in store.list_nodes(spec.name)
        if n.name not in listed and n.state in _IN_CLUSTER
    ]
    if busy:
        raise ConflictError(
            f"--replace would drop nodes that are still in cluster {spec.name}: " + ", ".join(busy),
            hint="remove them first with 'metalctl nodes remove', or keep them in the spec",
        )
