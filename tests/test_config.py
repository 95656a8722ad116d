"""Profiles and run-time configuration: documented differences, checked changes."""

from __future__ import annotations

import pytest

from lumin_nb.config import PROFILES, ConfigManager, profile_config
from lumin_nb.errors import ConfigError


def test_profiles_differ_where_documented() -> None:
    dev, safe = profile_config("dev"), profile_config("prod_safe")
    assert not dev.redact and safe.redact, "redaction is on by default in prod_* only"
    assert profile_config("prod_deep_dive").redact
    assert safe.call_sample_rate < dev.call_sample_rate
    assert safe.overhead_budget == 0.03
    assert safe.buffer_max_events < dev.buffer_max_events
    assert dev.metrics_interval_s == 1.0
    assert {profile_config(p).profile for p in PROFILES} == set(PROFILES)


def test_unknown_profile_names_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"Did you mean 'prod_safe'\?") as info:
        profile_config("prod-safe")
    assert "dev, staging, prod_safe, prod_deep_dive" in str(info.value)


def test_every_bad_key_and_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        profile_config("dev", flush_interval=1, redact="yes", call_sample_rate=3.0)
    text = str(info.value)
    assert "'flush_interval' is not a configuration key. Did you mean 'flush_interval_s'?" in text
    assert "redact='yes': expected bool, got str" in text
    assert "call_sample_rate=3.0: expected a fraction between 0.0 and 1.0" in text
    assert "Fix:" in text


def test_flush_interval_cannot_exceed_the_durability_promise() -> None:
    with pytest.raises(ConfigError, match="<= 1 s"):
        profile_config("dev", flush_interval_s=5.0)


def test_manager_tells_listeners_of_each_change_and_keeps_old_config_on_error() -> None:
    manager = ConfigManager(profile_config("dev"))
    seen: list[dict[str, object]] = []
    manager.subscribe(lambda cfg, changes: seen.append(changes))
    manager.update(log_level=30)
    assert manager.config.log_level == 30 and seen == [{"log_level": 30}]
    with pytest.raises(ConfigError):
        manager.update(log_level="loud")
    assert manager.config.log_level == 30 and len(seen) == 1


def test_thread_events_and_flush_interval_of_the_prod_profiles() -> None:
    for profile in ("prod_safe", "prod_deep_dive"):
        cfg = profile_config(profile)
        assert (cfg.thread_events, cfg.flush_interval_s) == ("end", 1.0)
    assert profile_config("dev").thread_events == "start_end"
    assert profile_config("dev", thread_events="end").thread_events == "end"
    with pytest.raises(ConfigError, match="thread_events='both'"):
        profile_config("dev", thread_events="both")
