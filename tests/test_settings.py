"""Settings come from the environment, once, the same for the API and the worker."""

import pytest
from pydantic import ValidationError

from shared.settings import Settings
from shared.taskqueue import create_celery
from tests.support import REPO


def test_settings_are_read_from_environment_variables(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/2")
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("MAX_EPOCHS", "50")
    monkeypatch.setenv("TORCH_DEVICE", "cpu")
    settings = Settings()
    assert (settings.redis_url, settings.port, settings.max_epochs, settings.torch_device) == (
        "redis://127.0.0.1:6390/2",
        9000,
        50,
        "cpu",
    )


@pytest.mark.parametrize(
    "name,value", [("PORT", "0"), ("MAX_EPOCHS", "-1"), ("TORCH_DEVICE", "tpu"), ("JOB_TTL_SECONDS", "soon")]
)
def test_a_bad_setting_stops_the_process_with_its_name(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_the_queue_is_json_only_with_late_acks_and_redelivery_after_the_time_limit():
    settings = Settings(job_time_limit_seconds=120, redelivery_margin_seconds=15, restore_sweep_seconds=5)
    conf = create_celery(settings).conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit == 114 and conf.task_time_limit == 120
    transport = conf.broker_transport_options
    assert transport["visibility_timeout"] == 135 > conf.task_time_limit
    assert transport["unacked_restore_interval"] == 5 and transport["unacked_restore_throttle"] == 1
    assert settings.redelivery_bound_seconds == 140
    assert conf.worker_max_tasks_per_child == 1000 and conf.worker_max_memory_per_child == 2048 * 1024
    assert not conf.worker_send_task_events and not conf.task_send_sent_event  # off: each costs round trips
    events_on = create_celery(Settings(task_events=True)).conf
    assert events_on.worker_send_task_events and events_on.task_send_sent_event  # for Flower


def test_the_readme_lists_every_setting_with_its_default():
    readme = (REPO / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{name.upper()}` |")), None)
        assert row is not None, f"README.md does not list {name.upper()}"
        if field.default is not None:
            written = str(field.default).lower() if isinstance(field.default, bool) else field.default
            assert f"`{written}`" in row or f"`{field.default:g}`" in row, row
