"""Render the Ansible inventory of a cluster: the contract between metalctl and the roles.

Secrets are never put into the inventory: the roles read them on the controller from
the 0600 files whose paths are given here (``*_file`` / ``*_src`` variables).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metalctl.conventions import SWARM_NODE_SERVICE, kv_prefix
from metalctl.paths import ClusterPaths
from metalctl.pki import ca_paths, node_cert_paths, secret_paths
from metalctl.spec import ClusterSpec


@dataclass(frozen=True)
class ConsulSource:
    """Where the consul role gets its binary: a file on the admin host, or a URL + SHA-256."""

    src: Path | None = None
    url: str = ""
    sha256: str = ""


def render_inventory(
    spec: ClusterSpec,
    paths: ClusterPaths,
    ssh_key: Path,
    consul: ConsulSource,
    limit: list[str] | None = None,
    retired: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``retired`` nodes are left out whole: a play must not, e.g., re-create the Consul
    token that 'nodes remove' revoked."""
    sw, cs = spec.spec.swarm, spec.spec.consul
    wanted = [n for n in spec.nodes if n.name not in retired and (limit is None or n.name in limit)]
    hosts: dict[str, Any] = {}
    for node in wanted:
        certs = node_cert_paths(paths, node.name)
        hosts[node.name] = {
            "ansible_host": node.address,
            "ansible_user": node.ssh.user,
            "ansible_port": node.ssh.port,
            "ansible_ssh_private_key_file": str(ssh_key),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ready_state_hostname": node.name,
            "docker_api_address": node.address,
            "docker_tls_cert_src": str(certs.cert),
            "docker_tls_key_src": str(certs.key),
            "consul_server": node.name in cs.servers,
            "consul_bind_address": node.address,
            "consul_tls_cert_src": str(certs.cert),
            "consul_tls_key_src": str(certs.key),
            "swarm_role": spec.role_of(node.name),
            "swarm_advertise_address": node.address,
        }
    secrets = secret_paths(paths)
    cas = ca_paths(paths)
    group_vars: dict[str, Any] = _package_sources(spec)
    by_name = {n.name: n for n in spec.nodes}
    group_vars |= {
        "ready_state_hosts": [{"name": n.name, "address": n.address} for n in spec.nodes],
        "ready_state_timezone": "UTC",
        "docker_api_port": sw.docker_api_port,
        # dockerd accepts clients of the admin client CA only (never node certificates);
        # its API is checked from here with the admin client certificate.
        "docker_tls_client_ca_src": str(cas.client),
        "docker_api_check_cert_path": str(paths.docker_client),
        "consul_datacenter": cs.datacenter,
        "consul_version": cs.version,
        "consul_binary_src": str(consul.src) if consul.src else "",
        "consul_binary_url": consul.url,
        "consul_binary_sha256": consul.sha256,
        "consul_retry_join": [by_name[s].address for s in cs.servers],
        "consul_bootstrap_expect": len(cs.servers),
        "consul_tls_ca_src": str(cas.cluster),
        "consul_tls_client_ca_src": str(cas.client),
        "consul_gossip_key_file": str(secrets.gossip_key),
        "consul_master_token_file": str(secrets.master_token),
        "consul_acl_tokens_file": str(secrets.acl_tokens),
        "consul_controller_token_file": str(secrets.controller_token),
        "consul_controller_kv_prefix": kv_prefix(spec.name),
        "swarm_master": sw.master,
        "swarm_consul_service_name": SWARM_NODE_SERVICE,
    }
    names = set(hosts)
    # spec.swarm.managers (master included) first, then managers added on day 2.
    managers = [*sw.managers, *(n.name for n in spec.nodes if spec.role_of(n.name) == "manager")]
    managers = list(dict.fromkeys(managers))
    return {
        "all": {
            "hosts": hosts,
            "vars": group_vars,
            "children": {
                "swarm_managers": {"hosts": {m: {} for m in managers if m in names}},
                "swarm_workers": {"hosts": {n: {} for n in hosts if n not in managers}},
                "consul_servers": {"hosts": {s: {} for s in cs.servers if s in names}},
            },
        }
    }


# The repository ids ready_state gives spec.packages.elMirror (see its RedHat.yml).
EL_MIRROR_REPOS = ("metalctl-baseos", "metalctl-appstream")


def _package_sources(spec: ClusterSpec) -> dict[str, Any]:
    """spec.packages as role variables: where apt and dnf get packages."""
    packages = spec.spec.packages
    if packages is None:
        return {"ready_state_apt_proxy": "", "ready_state_el_mirror": ""}
    out: dict[str, Any] = {
        "ready_state_apt_proxy": packages.apt_proxy or "",
        "ready_state_el_mirror": (packages.el_mirror or "").rstrip("/"),
    }
    if packages.el_mirror:
        # Docker CE's own repository stays in: from dockerCeMirror, or from Docker's site.
        out["docker_dnf_repos"] = [*EL_MIRROR_REPOS, "docker-ce-stable"]
    if packages.docker_ce_mirror:
        mirror = packages.docker_ce_mirror.rstrip("/")
        out["docker_ce_repo_baseurl"] = f"{mirror}/$releasever/$basearch/stable"
        out["docker_ce_repo_gpgkey"] = f"{mirror}/gpg"
    return out
