"""How long a service waits before restarting a consumer that failed."""

from __future__ import annotations

from shared.runtime import restart_delay


def test_the_delay_doubles_while_the_consumer_keeps_failing_up_to_its_most() -> None:
    delays, delay = [], None
    for _ in range(9):
        delay = restart_delay(delay, ran_for=0.1)
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_consumer_that_had_recovered_is_restarted_soon_after_its_next_failure() -> None:
    assert restart_delay(30.0, ran_for=3600.0) == 0.5  # ran an hour: a new outage
    assert restart_delay(30.0, ran_for=29.0) == 30.0  # failed again within the delay
