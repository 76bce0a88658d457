"""How the Cassandra adapter routes requests (no server needed)."""

from __future__ import annotations

from cassandra import ConsistencyLevel
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

from streamer.adapters.cassandra.store import execution_profile
from streamer.settings import CassandraSettings


def test_requests_go_to_a_replica_of_their_partition_in_the_local_dc():
    profile = execution_profile(CassandraSettings(local_dc="eu-west", request_timeout_s=7.0))
    policy = profile.load_balancing_policy
    assert isinstance(policy, TokenAwarePolicy)
    assert isinstance(policy._child_policy, DCAwareRoundRobinPolicy)
    assert policy._child_policy.local_dc == "eu-west"
    assert profile.request_timeout == 7.0
    assert profile.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    assert profile.serial_consistency_level == ConsistencyLevel.LOCAL_SERIAL
