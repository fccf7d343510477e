"""Plumbing every gRPC server shares: building and serving, tasks, errors, logs, metrics."""
