"""The operator commands: `cache` and `warm`, clients of a cache directory or of a running mirror, and
`node-config` and `doctor`, which configure and check a node's container runtimes.

They import nothing of the server (no proxy, fills or caches), so they start fast and can run next to it.
"""
