"""The supervisor's restart policy, on a clock the test sets: backoff doubles to its ceiling
and resets after a stable run."""

from switchboard.restarts import RestartBackoff


def test_an_exited_process_waits_out_a_doubling_backoff_that_a_stable_run_resets() -> None:
    policy = RestartBackoff(start_secs=1.0, max_secs=3.0, stable_after_secs=60.0)
    policy.started_at = 0.0
    waits = []
    now = 10.0
    for _ in range(3):
        assert not policy.due("child", exit_code=1, now=now)  # the exit is seen: wait
        waits.append(policy.restart_at - now)
        assert not policy.due("child", exit_code=1, now=policy.restart_at - 0.01)
        now = policy.restart_at
        assert policy.due("child", exit_code=1, now=now)
        policy.started_at, policy.restart_at = now, None  # what started() records
    assert waits == [1.0, 2.0, 3.0] and policy.restarts == 3
    assert not policy.due("child", exit_code=None, now=now + 61)  # ran stably for a minute
    assert policy.backoff == 1.0
