"""Deploying workloads: workload loading, phases, inventory rendering and ansible-runner."""
