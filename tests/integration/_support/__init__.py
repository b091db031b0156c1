"""Helpers behind the integration fixtures: kubectl, waits, the cluster, the operator process."""
