"""glibc keeps freed tensor-sized blocks for reuse after ``keep_freed_memory()``: a freed 64 MB
block stays resident for the next allocation, where plain glibc unmaps it (and maps and faults in
fresh pages next time). ``bound_primitive_caches()`` caps the per-shape primitive caches of oneDNN
and ideep unless the user chose a capacity, and the capacity is recorded with the hardware."""

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


CACHE_PROBE = """
import json, os
import torch
from ragtune.allocator import bound_primitive_caches
from ragtune.precision import hardware
caps = bound_primitive_caches()
info = hardware("fp32")
print(json.dumps({"caps": caps, "env": {k: os.environ.get(k) for k in caps}, "hardware": info}))
"""


def _cache_probe(**env: str) -> dict:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    }
    out = subprocess.run(
        [sys.executable, "-c", CACHE_PROBE], env={**base, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_primitive_caches_are_bounded_unless_the_user_chose_a_capacity() -> None:
    from ragtune.allocator import PRIMITIVE_CACHE_CAPACITY

    plain = _cache_probe()
    assert plain["caps"] == PRIMITIVE_CACHE_CAPACITY == plain["env"]
    assert int(PRIMITIVE_CACHE_CAPACITY["LRU_CACHE_CAPACITY"]) < 1024  # the libraries' default
    assert int(PRIMITIVE_CACHE_CAPACITY["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]) < 1024
    for var, value in PRIMITIVE_CACHE_CAPACITY.items():
        assert plain["hardware"][var] == value  # recorded with every run's hardware
    chosen = _cache_probe(LRU_CACHE_CAPACITY="4")
    assert chosen["caps"]["LRU_CACHE_CAPACITY"] == "4" == chosen["hardware"]["LRU_CACHE_CAPACITY"]
    assert (
        chosen["caps"]["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]
        == PRIMITIVE_CACHE_CAPACITY["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]
    )
