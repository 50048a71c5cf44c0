"""API clients for a deployed cluster (Docker, Consul): mutual TLS, typed errors; no deploy or membership logic."""
