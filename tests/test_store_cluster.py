"""The store's own suite again, on a real 3-master Redis Cluster with the prefix `{hitl}`.

Every multi-key script must find all its keys in one slot; the hash tag puts them there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store.redis_store import Store
from tests.test_store import *  # noqa: F403  (the same tests, collected here with this fixture)

pytestmark = pytest.mark.cluster


@pytest.fixture
async def store(cluster_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(cluster_url, prefix="{hitl}")
    assert s.cluster
    yield s
    await s.close()
