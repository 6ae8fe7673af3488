from __future__ import annotations

from sdcore.domain.models import GenerationParams, Role, Task, TaskKind, TaskStatus
from sdcore.services import Services
from sdcore.usecases.auth import create_user
from sdcore.usecases.notify import deliver_webhook
from sdcore.usecases.submit import submit_task
from sdcore.usecases.tasks import request_cancel


def test_a_failed_delivery_is_retried_later_then_given_up(svc: Services) -> None:
    # Given a task with a webhook nobody listens on (port 1 on loopback refuses at once)
    svc.settings.allow_private_urls = True
    create_user(svc, "alice", Role.USER)
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p")
    task = submit_task(svc, params, None, [], owner="alice", webhook="http://127.0.0.1:1/hook")
    svc.queue.delete(svc.queue.receive()[0].receipt)
    # When it ends, a delivery is queued
    assert request_cancel(svc, task.task_id).status is TaskStatus.CANCELLED
    [message] = svc.queue.receive(visibility_s=0)
    assert message.body == {"webhook": task.task_id, "attempt": 1}
    svc.queue.delete(message.receipt)

    # Then a failing attempt queues the next one with a delay, and the last attempt gives up
    def render(t: Task) -> dict[str, str]:
        return {"taskId": t.task_id}

    assert deliver_webhook(svc, task.task_id, 1, render) == "retrying"
    assert svc.queue.receive() == []  # not yet: backoff
    assert deliver_webhook(svc, task.task_id, 5, render) == "gave-up"


def test_a_webhook_to_a_private_address_is_refused_at_submit(svc: Services) -> None:
    import pytest

    from sdcore.errors import InvalidInputError

    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p")
    with pytest.raises(InvalidInputError) as err:
        submit_task(svc, params, None, [], webhook="http://169.254.169.254/latest")
    assert err.value.field == "webhook"
