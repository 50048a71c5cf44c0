"""The PXE boot service: per-MAC iPXE scripts, boot files and the discovery API.

    machine PXE-boots -> GET /boot.ipxe?mac=M -> discovery kernel + per-boot token
        -> POST /v1/discovery (Bearer token, facts) -> machine 'discovered' in the store

``serve`` runs the HTTP side until an event is set; ``BootService`` runs the same server in
a thread (tests). ``server.run`` / ``serve_until_signalled`` run the whole boot service
(``metalctl boot serve``): dnsmasq for DHCP/TFTP (``dnsmasq.py``, after the DHCP check of
``dhcp_probe.py``) beside the HTTP side. See docs/pxe.md. This package uses only core
modules (store, errors, paths), never the CLI.
"""

from __future__ import annotations

from metalctl.boot.config import BootConfig
from metalctl.boot.server import BootServerSettings, serve_until_signalled
from metalctl.boot.service import BootService, serve

__all__ = ["BootConfig", "BootServerSettings", "BootService", "serve", "serve_until_signalled"]
