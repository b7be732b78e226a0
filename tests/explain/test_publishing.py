"""The publisher thread sends what is handed to it within its linger as a few messages."""

from __future__ import annotations

from celery import current_app

from explain import publishing


def drain(queue: str) -> list[tuple]:
    """The explanation tasks waiting in `queue` (taken out of it): their args."""
    found = []
    with current_app.connection_for_read() as connection:
        simple = connection.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    message = simple.get(block=False)
                except simple.Empty:
                    break
                assert message.headers["task"] == publishing.TASK
                found.append(tuple(message.payload[0]))
        finally:
            simple.close()
    return found


def test_requests_handed_over_together_are_sent_as_one_message_per_version_and_method():
    drain("explain")
    drain("explain-lime")
    for decision_id in range(1, 41):  # forty requests of one decision each, as a busy process
        methods = ("shap", "lime") if decision_id % 4 == 0 else ("shap",)
        publishing.enqueue_soon({(7, method): [decision_id] for method in methods})
    publishing.wait_until_published()

    shap, lime = drain("explain"), drain("explain-lime")

    assert sorted(i for _, method, ids in shap for i in ids if method == "shap") == list(
        range(1, 41)
    )
    assert sorted(i for _, _, ids in lime for i in ids) == list(range(4, 41, 4))
    assert {version for version, _, _ in shap + lime} == {7}
    # within one linger: one message each, where a request each sent forty and ten
    assert len(shap) < 5 and len(lime) < 5, (len(shap), len(lime))
