import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamer.settings import Settings

pytestmark = pytest.mark.unit
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def env_names():
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            for sub in field.annotation.model_fields:
                yield f"STREAMER_{name.upper()}__{sub.upper()}"
        else:
            yield f"STREAMER_{name.upper()}"


def test_every_setting_is_documented_in_the_readme():
    missing = [n for n in env_names() if f"`{n}`" not in README]
    assert missing == []


def test_nested_env_overrides_one_field_and_keeps_siblings(monkeypatch):
    monkeypatch.setenv("STREAMER_KAFKA__BOOTSTRAP_SERVERS", "k:1")
    monkeypatch.setenv("STREAMER_MODEL__BASE_URLS", '["http://a/v1","http://b/v1"]')
    s = Settings()
    assert s.kafka.bootstrap_servers == "k:1" and s.kafka.input_topic == "profiles.interactions.v1"
    assert s.model.base_urls == ["http://a/v1", "http://b/v1"]
    assert "EMPTY" not in repr(s.model.api_key)


def test_defaults_are_the_reference_sampling():
    s = Settings(_env_file=None)
    assert (s.model.temperature, s.model.top_p, s.model.top_k, s.model.max_tokens) == (
        0.6, 0.95, 20, 4096)
    assert os.environ.get("STREAMER_MODEL__TEMPERATURE") is None
