"""The PXE boot service: per-MAC iPXE scripts, boot files and the discovery API.

    machine PXE-boots -> GET /boot.ipxe?mac=M -> discovery kernel + per-boot token
        -> POST /v1/discovery (Bearer token, facts) -> machine 'discovered' in the store

``serve`` is the entry point for ``metalctl boot serve``; ``BootService`` runs the same
server in a thread (tests). See docs/pxe.md. This package uses only core modules
(store, errors, paths), never the CLI.
"""

from __future__ import annotations

from metalctl.boot.config import BootConfig
from metalctl.boot.service import BootService, serve

__all__ = ["BootConfig", "BootService", "serve"]
