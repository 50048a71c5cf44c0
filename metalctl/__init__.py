"""metalctl: bare-metal machines to ready state to a Docker Swarm with Consul."""

__version__ = "0.1.0"
