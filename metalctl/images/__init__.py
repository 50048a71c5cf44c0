"""Images metalctl builds or imports: the discovery image (kernel + initramfs with the
agent) and OS disk images, kept in a host-wide cache (``cache.py``)."""
