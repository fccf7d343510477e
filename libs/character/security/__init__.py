"""Security building blocks the services wire in: certificates (`pki`), caller identities
(`auth`), and the admission of remotely submitted run specs (`admission`).

Nothing here speaks gRPC; `character_services` turns these into TLS credentials,
interceptors and status codes.
"""
