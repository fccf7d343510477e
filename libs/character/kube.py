"""The Kubernetes API client the platform uses (the executor's Jobs, the controller's TokenReviews)."""

from __future__ import annotations

from typing import Any


def default_api_client() -> Any:
    """In a pod: the ServiceAccount's credentials; elsewhere: the kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()
