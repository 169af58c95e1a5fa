"""What a queue job is and what it collects: identity from what it renders (never from its position or the characters
of its name), readable folder names in any script, every output file kept, and the jobs API of newer ComfyUI used
where the server has it. Against test_comfy_queue's fake servers."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.test_comfy_queue import FakeComfy, named, settings_for
from xportrait_core.batch_queue.batch_plan import collect_pairs, plan_jobs
from xportrait_core.batch_queue.queue_state import DONE, QueueState
from xportrait_core.batch_queue.runner import QueueInterrupted, run_queue


@pytest.fixture
def fake():
    server = FakeComfy()
    yield server
    server.stop()


def inputs(folder: Path, names: list[str], kind: str = "source") -> Path:
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"{kind} bytes of {name}".encode())
    return folder


def run(fake, tmp_path, sources: Path, drivings: Path, **overrides) -> QueueState:
    output = tmp_path / "out"
    return run_queue(settings_for([fake], output, **overrides), plan_jobs(collect_pairs(sources, drivings)),
                     output / "queue_state.json")


def folders(state: QueueState) -> list[str]:
    return [state.jobs[key].folder for key in state.planned]


# ---- outputs -----------------------------------------------------------------------------------

def test_two_save_nodes_writing_one_name_into_two_subfolders_keep_both_files(tmp_path):
    fake = FakeComfy(two_save_nodes=True)
    try:
        state = run(fake, tmp_path, inputs(tmp_path / "s", ["anna.png"]), inputs(tmp_path / "d", ["smile.mp4"], "d"))
    finally:
        fake.stop()

    job = named(state, "anna__smile")
    assert sorted(job.outputs) == ["anna__smile/a__XP_00000_.mp4", "anna__smile/b__XP_00000_.mp4"]
    contents = {(tmp_path / "out" / name).read_bytes().rsplit(b"|", 1)[1] for name in job.outputs}
    assert contents == {b"a", b"b"}  # each file is its own save node's, none written over the other


# ---- job identity ------------------------------------------------------------------------------

def test_non_latin_names_keep_distinct_readable_folders(fake, tmp_path):
    sources = inputs(tmp_path / "s", ["Анна.png", "Борис.png", "张伟.png", "Ωmega.png"])

    state = run(fake, tmp_path, sources, inputs(tmp_path / "d", ["улыбка.mp4"], "d"))

    assert set(folders(state)) == {"Анна__улыбка", "Борис__улыбка", "Ωmega__улыбка", "张伟__улыбка"}
    assert all((tmp_path / "out" / name).is_dir() for name in folders(state))
    assert len(fake.uploads) == 5 and not any(name.startswith("_") for name in fake.uploads)


def test_adding_a_portrait_keeps_the_other_jobs_names_and_renders_only_the_new_one(fake, tmp_path):
    sources, drivings = inputs(tmp_path / "s", ["face.png"]), inputs(tmp_path / "d", ["clip.mp4"], "d")
    first = run(fake, tmp_path, sources, drivings)
    inputs(sources, ["a_face.png"])  # sorts before the first one

    second = run(fake, tmp_path, sources, drivings)

    assert folders(first) == ["face__clip"]
    assert folders(second) == ["a_face__clip", "face__clip"] and len(fake.accepted) == 2
    assert named(second, "face__clip").job_id == first.planned[0]


def test_same_name_inputs_of_other_content_never_share_a_folder(fake, tmp_path):
    drivings = inputs(tmp_path / "d", ["clip.mp4"], "d")
    sources = inputs(tmp_path / "s1", ["face.png"])
    run(fake, tmp_path, sources, drivings)
    (sources / "face.png").write_bytes(b"another person")

    state = run(fake, tmp_path, sources, drivings)

    (folder,) = folders(state)
    assert folder.startswith("face__clip-") and len(fake.accepted) == 2


def test_rerunning_a_finished_folder_with_another_seed_renders_and_says_why(fake, tmp_path, caplog):
    sources, drivings = inputs(tmp_path / "s", ["anna.png", "ben.png"]), inputs(tmp_path / "d", ["a.mp4", "b.mp4"])
    run(fake, tmp_path, sources, drivings)

    with caplog.at_level(logging.INFO):
        reseeded = run(fake, tmp_path, sources, drivings, seed=99)

    assert reseeded.counts()[DONE] == 4 and len(fake.accepted) == 8
    assert {item["prompt"]["3"]["inputs"]["seed"] for item in fake.accepted[4:]} == {99}
    assert "4 of these source x driving pairs were rendered before with another workflow or seed" in caplog.text
    assert "already done" not in caplog.text
    assert all(name.startswith(("anna__", "ben__")) and "-" in name for name in folders(reseeded))
    back = run(fake, tmp_path, sources, drivings)  # the first settings again: all done, nothing renders
    assert back.counts()[DONE] == 4 and len(fake.accepted) == 8


def test_rerunning_with_the_increment_policy_on_the_workflows_own_seeds_renders(fake, tmp_path):
    sources, drivings = inputs(tmp_path / "s", ["anna.png", "ben.png"]), inputs(tmp_path / "d", ["a.mp4"], "d")
    run(fake, tmp_path, sources, drivings)

    state = run(fake, tmp_path, sources, drivings, seed_policy="increment")

    assert state.counts()[DONE] == 2 and len(fake.accepted) == 4
    assert sorted(item["prompt"]["3"]["inputs"]["seed"] for item in fake.accepted[2:]) == [7, 8]


def test_rerunning_with_another_workflow_renders(fake, tmp_path):
    sources, drivings = inputs(tmp_path / "s", ["anna.png"]), inputs(tmp_path / "d", ["a.mp4"], "d")
    run(fake, tmp_path, sources, drivings)
    output = tmp_path / "out"
    settings = settings_for([fake], output)
    settings.workflow["3"]["inputs"]["ckpt_name"] = "other.pth"

    state = run_queue(settings, plan_jobs(collect_pairs(sources, drivings)), output / "queue_state.json")

    assert state.counts()[DONE] == 1 and len(fake.accepted) == 2
    assert fake.accepted[1]["prompt"]["3"]["inputs"]["ckpt_name"] == "other.pth"


def test_a_done_job_whose_files_were_deleted_renders_again(fake, tmp_path):
    sources, drivings = inputs(tmp_path / "s", ["anna.png", "ben.png"]), inputs(tmp_path / "d", ["a.mp4"], "d")
    first = run(fake, tmp_path, sources, drivings)
    (tmp_path / "out" / named(first, "ben__a").outputs[0]).unlink()

    state = run(fake, tmp_path, sources, drivings)

    assert state.counts()[DONE] == 2 and len(fake.accepted) == 3
    assert fake.accepted[2]["prompt"]["1"]["inputs"]["image"].startswith("ben-")


def test_the_increment_seed_of_a_job_stays_when_a_portrait_is_added(fake, tmp_path):
    sources, drivings = inputs(tmp_path / "s", ["b.png"]), inputs(tmp_path / "d", ["clip.mp4"], "d")
    run(fake, tmp_path, sources, drivings, seed=10, seed_policy="increment")
    inputs(sources, ["a.png"])  # sorts first: job number 0 of the new plan

    run(fake, tmp_path, sources, drivings, seed=10, seed_policy="increment")

    seeds = [(item["prompt"]["1"]["inputs"]["image"][:1], item["prompt"]["3"]["inputs"]["seed"])
             for item in fake.accepted]
    assert seeds == [("b", 10), ("a", 11)]  # b kept its seed (not rendered again), a got a free one


# ---- the jobs API (ComfyUI v0.26 and later) ----------------------------------------------------

LEGACY_ROUTES = {("GET", "/queue"), ("GET", "/history/*"), ("POST", "/queue"), ("POST", "/interrupt")}


def test_a_server_with_the_jobs_api_is_followed_through_it(tmp_path):
    newer = FakeComfy(jobs_api=True)
    try:
        state = run(newer, tmp_path, inputs(tmp_path / "s", ["anna.png"]), inputs(tmp_path / "d", ["a.mp4"], "d"))
    finally:
        newer.stop()

    assert state.counts()[DONE] == 1
    used = {route for route, count in newer.requests.items() if count}
    assert {("GET", "/api/jobs"), ("GET", "/api/jobs/*")} <= used and not used & LEGACY_ROUTES


def test_a_server_without_it_is_followed_through_queue_and_history(fake, tmp_path):
    state = run(fake, tmp_path, inputs(tmp_path / "s", ["anna.png"]), inputs(tmp_path / "d", ["a.mp4"], "d"))

    assert state.counts()[DONE] == 1
    assert fake.requests[("GET", "/api/jobs")] == 1  # asked once, answered 404
    assert fake.requests[("GET", "/queue")] >= 1 and fake.requests[("GET", "/history/*")] >= 1


@pytest.mark.parametrize("jobs_api", [True, False], ids=["jobs-api", "0.3.64"])
def test_ctrl_c_cancels_each_prompt_the_way_the_server_offers(tmp_path, monkeypatch, jobs_api):
    from tests.test_bad_inputs_queue import stop_once_all_are_queued

    server = FakeComfy(jobs_api=jobs_api, run_time_s=0.3, foreign_backlog=1)
    try:
        stop_once_all_are_queued(monkeypatch, server, 2, KeyboardInterrupt)
        with pytest.raises(QueueInterrupted) as stopped:
            run_queue(settings_for([server], tmp_path / "out", max_queue=6),
                      plan_jobs(collect_pairs(inputs(tmp_path / "s", ["a.png", "b.png"]),
                                              inputs(tmp_path / "d", ["c.mp4"], "d"))),
                      tmp_path / "out" / "queue_state.json", should_cancel=lambda in_flight: True)
    finally:
        server.stop()

    ours = [item["prompt_id"] for item in server.accepted]
    assert stopped.value.cancelled == 2 and server.interrupted == ours[:1] and sorted(server.deleted) == sorted(ours)
    assert len(server.foreign) == 1  # another user's prompt is left alone
    per_job = server.requests[("POST", "/api/jobs/*/cancel")]
    legacy = server.requests[("POST", "/queue")] + server.requests[("POST", "/interrupt")]
    assert (per_job, legacy) == ((2, 0) if jobs_api else (0, 3))


def test_folder_names_are_safe_on_every_filesystem_and_keep_every_script():
    from xportrait_core.batch_queue.naming import MAX_PART_BYTES, job_name

    assert job_name(Path('a:b?"c".png'), Path("Zoë <1>.mp4")) == "a_b__c___Zoë _1_"
    assert job_name(Path("..png"), Path(" .mp4")) == "source__driving"  # nothing left: a word, never a hidden name
    long = job_name(Path("я" * 300 + ".png"), Path("d.mp4"))
    assert len(long.split("__")[0].encode()) <= MAX_PART_BYTES and long.endswith("__d")
