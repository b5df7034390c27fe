"""Serving: a Ray Serve application over the generator and the selection policy:
``POST /v1/videos``, ``GET /healthz``, ``GET /v1/models`` and a web page at ``/``.

Importing this package imports neither Ray nor the generator; ``serving.app`` does.
"""
