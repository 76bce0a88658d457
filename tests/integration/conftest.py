"""Fixtures shared by the integration tests that use a real Cassandra."""

import asyncio
import uuid

import pytest

from streamer.adapters.cassandra.store import CassandraProfileStore, connect
from streamer.settings import CassandraSettings


@pytest.fixture(scope="module")
def cassandra_settings(cassandra_port):
    """A fresh keyspace per test module, dropped afterwards."""
    settings = CassandraSettings(port=cassandra_port, keyspace=f"it_{uuid.uuid4().hex[:8]}")
    yield settings
    cluster, session = connect(settings)
    session.execute(f"DROP KEYSPACE IF EXISTS {settings.keyspace}")
    cluster.shutdown()


@pytest.fixture
async def store(cassandra_settings):
    """A migrated CassandraProfileStore on the module's keyspace."""
    s = await asyncio.to_thread(CassandraProfileStore.from_settings, cassandra_settings)
    yield s
    await s.aclose()
