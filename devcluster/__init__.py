"""Development tools: the local cluster, the libSQL test server and the demo.

Imported by tests, `make demo` and the benchmarks; never by `controller/` or `runner/`.
"""
