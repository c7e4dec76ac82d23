"""The runtime as a service: what lives around the pipeline rather than inside it.

The command (``edge-runtime run``, and the daemon) starts these before the pipeline and stops them
after it, so they stay alive while the model is reloaded or swapped:

- :mod:`~edge_runtime.service.signals`: SIGINT/SIGTERM stop the pipeline after the frame in hand;
  a second one gives up at once. Other signals (SIGHUP for a reload) plug in the same way.
- :mod:`~edge_runtime.service.status_server`: ``/healthz`` ``/status`` ``/latest`` ``/metrics``
  over an injected :class:`~edge_runtime.status.RuntimeStatus`.
- :mod:`~edge_runtime.service.metrics`: the Prometheus metrics, fed by the status as an observer.

Stage packages never import this package (an import-linter contract).
"""
