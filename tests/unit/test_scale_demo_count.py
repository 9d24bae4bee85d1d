"""The scale demo counts every run the killed worker held, first runs and resumes alike."""

from __future__ import annotations

from evals.scale_demo import Kill, ThreadRun, cases, healthy, held_runs


def test_a_first_run_the_engine_re_ran_elsewhere_counts_as_recovered() -> None:
    a, b, c = (ThreadRun(x, final_status="done") for x in cases(3))
    a.run_id, a.resume_id = "a-run", "a-resume"
    b.run_id, b.resume_id = "b-run", "b-resume"
    c.run_id, c.resume_id = "c-run", "c-resume"
    kill = Kill(pid=7, held=("a-run", "b-resume", "c-resume"))
    statuses = {"a-run": "interrupted", "b-resume": "success", "c-resume": "error"}
    finished = {"a-run": [7, 8], "b-resume": [8], "c-resume": [7]}
    held = held_runs(kill, [a, b, c], statuses, finished)
    assert [(h["kind"], h["recovered"]) for h in held] == [
        ("run", True),  # the first run, re-run by worker 8 up to its approval
        ("resume", True),
        ("resume", False),  # it failed, and only the killed worker ever finished it
    ]


def test_a_run_whose_thread_did_not_finish_is_not_recovered() -> None:
    t = ThreadRun(cases(1)[0], run_id="r", resume_id="s", final_status="escalated")
    held = held_runs(Kill(pid=7, held=("r",)), [t], {"r": "interrupted"}, {"r": [8]})
    assert held == [{"run_id": "r", "kind": "run", "status": "interrupted", "recovered": False}]


def test_the_demo_is_healthy_when_every_held_run_was_recovered_whatever_its_kind() -> None:
    report = {
        "threads": 2, "completed": 2, "crossed_state": 0, "duplicate_irreversible": 0,
        "missing_side_effects": 0, "unattributed_side_effects": 0, "threads_in_postgres": 2,
        "runs_held_by_killed_worker": 2, "recovered_after_worker_kill": 2,
        "resumes_on_another_worker": 1, "sqlite_checkpoints_written": False,
        "sqlite_intents_written": False,
    }  # fmt: skip
    assert healthy(report)
    assert not healthy({**report, "recovered_after_worker_kill": 1})
    # Six threads, the killed worker's two runs recovered elsewhere, no other resume moved (a
    # fresh-clone CI saw it): the kill already showed runs finishing on another worker.
    assert healthy({**report, "resumes_on_another_worker": 0})
