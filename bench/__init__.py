"""`make bench`: Tutti measured against the raw limits of this machine.

Baselines first — a bare grpc.aio echo server (E1), the same echo behind a bare grpc.aio
pass-through proxy shaped like the gateway (E2), bare Redis script calls from Python — then
Tutti's own calls through the gateway, measured with the same load tool (ghz), the same
concurrency and the same duration, each server in its own process. ``python -m bench``
prints the table and writes docs/benchmarks.md with a plot.
"""
