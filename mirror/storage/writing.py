"""Writing bytes into the cache's files: the one rule for how a blob's bytes go into the page cache.

A fill's receives (`upstream/receive.py`), a body received over the session (`upstream/session.py`) and
a small body kept whole (`BlobStore.write_temp`) all write through `write_all`, in steps of `WRITE`.
"""

from __future__ import annotations

import os

#: Bytes per write into the temp file: a receive's bytes go in steps of this. The page cache takes a
#: write's bytes into folios as large as the write (ext4), and on this VM large folios often come from
#: memory the host must fault in again first: a new GiB in 1 MiB writes cost 1.0-1.8 CPU-s in the bench,
#: in 64 KiB writes 0.19-0.27, run for run. 128 KiB kept the fill at 1.44-1.51 mirror CPU-s per cold GiB
#: in 8 bench runs where 1 MiB writes measured 1.36-2.8; 256 KiB once reached 3.0; 64 KiB costs about
#: 0.1 more where the penalty is absent (16 writes per MiB). The README's "The cold path, measured".
WRITE = 128 * 1024


def write_all(fd: int, data: memoryview) -> None:
    """Write all of `data` at `fd`'s position, in writes of at most `WRITE` bytes (a short write goes on
    from where it stopped). Raises OSError when writing fails."""
    while data:
        written = os.write(fd, data[:WRITE])
        data = data[written:]
