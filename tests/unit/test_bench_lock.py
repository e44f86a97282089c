"""One benchmark or fault-suite run per stack: a second run would drop the first one's
database and Kafka topics under it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.harness import StackBusy, one_run_at_a_time


def test_a_second_run_on_the_same_stack_is_refused_and_says_who_holds_it(tmp_path: Path) -> None:
    stack = {"PINGAN_STACK_DIR": str(tmp_path / "stack")}
    with one_run_at_a_time(stack, "a benchmark"):
        with pytest.raises(StackBusy) as refused:
            with one_run_at_a_time(stack, "the fault suite"):
                pytest.fail("two runs held one stack")
        assert f"a benchmark (pid {os.getpid()})" in str(refused.value)
    with one_run_at_a_time(stack, "the fault suite"):  # free again once the first run ended
        pass


def test_another_stack_is_not_held(tmp_path: Path) -> None:
    with one_run_at_a_time({"PINGAN_STACK_DIR": str(tmp_path / "a")}, "a benchmark"):
        with one_run_at_a_time({"PINGAN_STACK_DIR": str(tmp_path / "b")}, "a benchmark"):
            pass


def test_the_lock_is_given_back_when_the_run_fails(tmp_path: Path) -> None:
    stack = {"PINGAN_STACK_DIR": str(tmp_path)}
    with pytest.raises(RuntimeError), one_run_at_a_time(stack, "a benchmark"):
        raise RuntimeError("a component died")
    with one_run_at_a_time(stack, "a benchmark"):
        pass
