"""The operator commands (`cache`, `warm`): clients of a cache directory or of a running mirror.

They import nothing of the server (no proxy, fills or caches), so they start fast and can run next to it.
"""
