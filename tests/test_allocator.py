"""glibc keeps freed tensor-sized blocks for reuse after ``keep_freed_memory()``: a freed 64 MB
block stays resident for the next allocation, where plain glibc unmaps it (and maps and faults in
fresh pages next time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ragtune.allocator import keep_freed_memory

PROBE = """
import json, resource
import numpy as np
from ragtune.allocator import keep_freed_memory
took = keep_freed_memory()
page = resource.getpagesize()
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
kept = []
for _ in range(3):
    before = rss()
    a = np.ones(8 * 2**20)  # 64 MB, written
    del a
    kept.append(rss() - before)  # resident bytes the freed block left behind
print(json.dumps({"took": took, "kept": kept}))
"""


def _probe(keep: str) -> dict:
    env = {**os.environ, "RAGTUNE_KEEP_FREED_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_without_page_faults() -> None:
    if not keep_freed_memory():
        pytest.skip("not glibc: mallopt is not available here")
    kept, plain = _probe("1"), _probe("0")
    assert kept["took"] is True and plain["took"] is False
    block = 64 * 2**20
    assert plain["kept"][0] < block // 10  # unmapped on free: the next step maps and faults it in again
    assert kept["kept"][0] > block // 2  # kept in the heap for the next allocation
    assert abs(kept["kept"][-1]) < block // 10  # ... which reuses it instead of growing


RELEASE_PROBE = """
import json, resource
import numpy as np
from ragtune.allocator import keep_freed_memory, release_freed_memory
keep_freed_memory()
page = resource.getpagesize()
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
before = rss()
a = np.ones(8 * 2**20)  # 64 MB, written
del a
kept = rss() - before
ran = release_freed_memory()
print(json.dumps({"kept": kept, "ran": ran, "after": rss() - before}))
"""


def test_release_returns_kept_blocks_to_the_kernel() -> None:
    if not keep_freed_memory():
        pytest.skip("not glibc: mallopt is not available here")
    env = {**os.environ, "RAGTUNE_KEEP_FREED_MEMORY": "1"}
    out = subprocess.run(
        [sys.executable, "-c", RELEASE_PROBE], env=env, capture_output=True, text=True, check=True
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    block = 64 * 2**20
    assert probe["ran"] is True
    assert probe["kept"] > block // 2  # kept after free ...
    assert probe["after"] < block // 10  # ... and gone once released
