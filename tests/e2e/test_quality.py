"""The live quality score end to end: `streamer worker` with real Kafka and real Cassandra,
the judge being the model pool itself (a stand-in answering the paper's judge prompt with
logprobs); every version after the first carries the score of its predecessor."""

from __future__ import annotations

from streamer.services.updater import NO_MODEL
from tests.e2e.harness import Stack, start_standin
from tests.e2e.test_engines import assert_every_event_once, clickstream, run_worker


async def test_worker_scores_each_previous_summary_on_the_next_window(
        kafka_bootstrap, cassandra_port, unique, tmp_path):
    standin, base = start_standin(tmp_path, "--ttft-ms", "5")
    per_user = clickstream(4, seed=21)
    stack = Stack(kafka_bootstrap, cassandra_port, unique, [base])
    env = {"STREAMER_QUALITY__SAMPLE_RATE": "1", "STREAMER_QUALITY__BASELINE_RATE": "1",
           "STREAMER_WINDOW__MAX_EVENTS": "3"}
    by_user, current, _worker, _ = await run_worker(stack, tmp_path, standin, per_user,
                                                    timeout_s=180, env=env)
    assert_every_event_once(by_user, per_user)
    scored = 0
    for cs in by_user.values():
        assert cs[0].quality is None  # a first version: nothing to score
        for prev, c in zip(cs, cs[1:], strict=False):
            q = c.quality
            if q is None:  # a window without a real rejected item asks the judge nothing
                continue
            scored += 1
            assert q.scored_version == prev.version == c.version - 1
            assert q.judge == "VanillaH1/AlignXplore-Plus"  # the pool itself
            assert 1 <= q.summary.pairs <= 8 and 0 <= q.summary.correct <= q.summary.pairs
            assert q.no_summary is not None and q.no_summary.pairs == q.summary.pairs
            assert q.judge_calls == 2 * q.summary.pairs and q.judge_prompt_tokens > 0
    assert scored >= 3
    # what the store keeps is what was published (run_worker read each user's current row)
    for uid, cs in by_user.items():
        assert current[uid].quality == cs[-1].quality
        assert current[uid].triples or current[uid].model == NO_MODEL
