"""A whole worker killed mid-run, and the time until another worker completes the run.

Used by bench/measure.py (the default lease and sweep settings: what a user
gets) and by scripts/soak.py (short settings, many rounds). Runs in a process
where Django is set up on the database and broker under test.

A ``KillRig`` keeps one *survivor* worker running from ``start()`` to
``stop()``. Each ``round()``:

1. the survivor stops consuming the run queue (Celery remote control
   ``cancel_consumer``, confirmed by ``active_queues``), so that only the
   victim can take the run; the survivor keeps running and sweeping;
2. a fresh *victim* worker (``-c 1``, in a session of its own) starts and
   answers a ping addressed to it;
3. after a random pause of 0 to ``jitter`` seconds (so that where the
   survivor's periodic sweep falls relative to the kill is spread evenly:
   rounds of a steady length would otherwise keep it nearly fixed), a run of
   ``first -> slow [-> last]`` is launched from this process, and the round
   waits until the victim's pool process has claimed it;
4. the survivor consumes the run queue again (``add_consumer``, confirmed by
   its reply) - for the ``claim`` moment only right after the kill;
5. at the kill moment (right after the claim, a third into the first node, or
   a third into the slow node) the victim's whole process group gets SIGKILL;
6. the round waits, bounded, for the run to end, and checks its record: it
   completed, completed by the survivor after a ``lease_expired`` recovery,
   every node succeeded exactly once, the only failed stage is the attempt the
   kill interrupted, and no stage is left ``running``.

The recovery time is the run's ``finished_at`` minus the wall clock read just
before the kill (both are this host's clock).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

from bench.measure import Worker

MOMENTS = ("claim", "first", "slow")
# A kill lands this far into the node it targets, as a fraction of the node's duration.
KILL_INTO_NODE = 1 / 3
CLAIM_TIMEOUT = 60.0  # seconds from the launch until the victim claims the run
NODE_TIMEOUT = 60.0  # seconds from the claim until the targeted node starts
CONTROL_TIMEOUT = 15.0  # seconds for the survivor to confirm a consumer change
LOG_TIMEOUT = 15.0  # seconds for the survivor's recovery line to reach its log
POLL = 0.01  # seconds between reads of the run while waiting for a moment


class RoundFailed(AssertionError):
    """A round's run did not end as it must, or the round could not be set up."""


def kill_pipeline(*, first_seconds: float | None, slow_seconds: float, last: bool) -> dict:
    """A definition ``first -> slow [-> last]`` of ``context`` nodes.

    ``first`` samples the CPU for ``first_seconds`` (None: a memory reading,
    instant), ``slow`` for ``slow_seconds``; ``last`` is a memory reading."""
    def cpu(seconds: float) -> dict:
        return {"include": ["cpu"], "options": {"cpu": {"interval": seconds}}}

    first = {"id": "first", "type": "context",
             "config": cpu(first_seconds) if first_seconds else {"include": ["memory"]}, "next": "slow"}
    slow = {"id": "slow", "type": "context", "config": cpu(slow_seconds)}
    nodes = [first, slow]
    if last:
        slow["next"] = "last"
        nodes.append({"id": "last", "type": "context", "config": {"include": ["memory"]}})
    return {"version": "1.0", "description": "a worker is killed while this runs", "nodes": nodes}


def _pid_of(token: str) -> int | None:
    """The pid in a claim token ``host:pid:random``."""
    pid = token.split(":")[1] if token.count(":") >= 2 else ""
    return int(pid) if pid.isdigit() else None


class KillRig:
    """A survivor worker, and rounds in which a victim worker is killed holding a run.

    ``env`` is the workers' environment (database, broker, lease and sweep
    settings); ``run_timeout`` bounds the wait from the kill to the run's end;
    ``jitter`` is the longest random pause before a launch (give it the sweep
    interval).
    Always call ``stop()`` (a ``finally``): it stops the survivor and any victim.
    """

    def __init__(self, *, env: dict, workdir: Path, tag: str, first_seconds: float | None, slow_seconds: float,
                 last: bool, run_timeout: float, source: str, jitter: float = 0.0):
        from workers.celery import app

        self.app = app
        self.env = {**env, "LOG_FORMAT": "text"}  # the checks read the survivor's text log
        self.workdir, self.tag, self.source = workdir, tag, source
        self.first_seconds, self.slow_seconds = first_seconds, slow_seconds
        self.run_timeout, self.jitter = run_timeout, jitter
        self.definition = kill_pipeline(first_seconds=first_seconds, slow_seconds=slow_seconds, last=last)
        self.path = [node["id"] for node in self.definition["nodes"]]
        self.config_path = workdir / "kill-pipeline.json"
        self.config_path.write_text(json.dumps(self.definition))
        self.survivor: Worker | None = None
        self.victim: Worker | None = None

    # -- workers ----------------------------------------------------------------

    def start(self) -> float:
        """Start the survivor; seconds until it answered a ping."""
        self.survivor = Worker(app="workers", name=f"survivor-{self.tag}@bench", env=self.env,
                               log_path=self.workdir / "survivor.log", concurrency=2, new_session=True)
        self.survivor.start()
        return self.survivor.wait_ready(self.app)

    def stop(self) -> None:
        """Stop the victim (if any is left) and the survivor: SIGTERM to each process group,
        SIGKILL to what is left of it."""
        error = None
        for worker in (self.victim, self.survivor):
            if worker is not None:
                try:
                    worker.stop()
                except Exception as exc:  # noqa: BLE001 - stop the other one too, then report it
                    error = error or exc
        self.victim = None
        if error is not None:
            raise error

    def _survivor_consumes(self, on: bool) -> None:
        """Make the survivor consume the run queue (``on``) or not, and confirm it."""
        from apps.orchestration.dispatch import run_queue

        queue, name = run_queue(), self.survivor.name
        control = self.app.control
        deadline = time.monotonic() + CONTROL_TIMEOUT
        while time.monotonic() < deadline:
            if self.survivor.proc.poll() is not None:
                raise RoundFailed(f"the survivor exited with {self.survivor.proc.returncode}; "
                                  f"see {self.survivor.log_path}")
            change = control.add_consumer if on else control.cancel_consumer
            replies = change(queue, destination=[name], reply=True, timeout=2)
            if on:
                # "add consumer <queue>" or "already consuming from <queue>"
                if any("ok" in (reply.get(name) or {}) for reply in replies or ()):
                    return
            else:
                active = control.inspect(destination=[name], timeout=2).active_queues() or {}
                if name in active and all(q.get("name") != queue for q in active[name] or ()):
                    return
            time.sleep(0.2)
        raise RoundFailed(f"the survivor did not confirm {'consuming' if on else 'not consuming'} "
                          f"{queue} within {CONTROL_TIMEOUT:g}s")

    # -- one round --------------------------------------------------------------

    def round(self, index: int, moment: str) -> dict:
        """Kill a victim holding a run at ``moment`` (one of MOMENTS); the run's record
        is checked and the timings returned. Raises RoundFailed."""
        from apps.orchestration import inputs, launch
        from apps.orchestration.launchrequest import LaunchRequest
        from apps.orchestration.models import PipelineRun

        if moment not in MOMENTS:
            raise ValueError(f"unknown kill moment {moment!r}; one of {', '.join(MOMENTS)}")
        if moment == "first" and not self.first_seconds:
            raise ValueError("the 'first' moment needs a slow first node (first_seconds)")
        self._survivor_consumes(False)
        self.victim = Worker(app="workers", name=f"victim-{self.tag}-{index}@bench", env=self.env,
                             log_path=self.workdir / f"victim-{index}.log", concurrency=1, new_session=True)
        try:
            self.victim.start()
            victim_ready = self.victim.wait_ready(self.app)
            pause = random.uniform(0, self.jitter)
            time.sleep(pause)
            resolved = inputs.definition_resolve(config_path=str(self.config_path))
            request = LaunchRequest(resolved=resolved, payload={"round": index}, source=self.source)
            run = launch.pipeline_run_launch(request=request)
            claimed_by = self._wait_claim(run.pk)
            if moment != "claim":
                self._survivor_consumes(True)
                aimed = self._wait_node(run.pk, moment)
            t_kill = time.time()
            self.victim.kill_group()
            if moment == "claim":
                aimed = None
                self._survivor_consumes(True)
            left = PipelineRun.objects.values("lease_expires_at").get(pk=run.pk)["lease_expires_at"]
            if aimed is not None:
                self._check_still_running(run.pk, aimed)
        finally:
            self.victim.stop()
            self.victim = None
        done = self._wait_end(run.pk, t_kill)
        stages = self._check(done, moment)
        republished = done.published_at.timestamp() - t_kill
        return {
            "round": index,
            "moment": moment,
            "run_id": run.pk,
            "recovery_s": done.finished_at.timestamp() - t_kill,
            "lease_left_s": left.timestamp() - t_kill if left else None,
            "republished_s": republished,
            "victim_ready_s": victim_ready,
            "pause_s": pause,
            "victim": claimed_by,
            "completed_by": done.claimed_by,
            "stages": stages,
        }

    def _wait_claim(self, run_id: int) -> str:
        """Wait until the run is claimed; its token must name a victim process."""
        from apps.orchestration.models import PipelineRun

        deadline = time.monotonic() + CLAIM_TIMEOUT
        while time.monotonic() < deadline:
            row = PipelineRun.objects.values("status", "claimed_by").get(pk=run_id)
            if row["status"] != PipelineRun.Status.QUEUED:
                pid = _pid_of(row["claimed_by"])
                if row["status"] != PipelineRun.Status.RUNNING or pid not in self.victim.pids():
                    raise RoundFailed(f"run {run_id} was taken by {row['claimed_by'] or '?'} ({row['status']}), "
                                      f"not by the victim {sorted(self.victim.pids())}")
                return row["claimed_by"]
            if self.victim.proc.poll() is not None:
                raise RoundFailed(f"the victim exited with {self.victim.proc.returncode}; see {self.victim.log_path}")
            time.sleep(POLL)
        raise RoundFailed(f"run {run_id} not claimed within {CLAIM_TIMEOUT:g}s; see {self.victim.log_path}")

    def _wait_node(self, run_id: int, node: str) -> str:
        """Wait until ``node``'s first attempt has been running for KILL_INTO_NODE of its
        duration; returns ``node``. Raises RoundFailed when the moment was missed."""
        from apps.orchestration.models import StageExecution

        seconds = self.first_seconds if node == "first" else self.slow_seconds
        deadline = time.monotonic() + NODE_TIMEOUT
        while True:
            stage = StageExecution.objects.filter(run_id=run_id, node_id=node, attempt=1).values(
                "status", "started_at").first()
            if stage is not None:
                break
            if time.monotonic() > deadline or self.victim.proc.poll() is not None:
                raise RoundFailed(f"run {run_id}: node {node} did not start on the victim within "
                                  f"{NODE_TIMEOUT:g}s; see {self.victim.log_path}")
            time.sleep(POLL)
        kill_at = stage["started_at"].timestamp() + seconds * KILL_INTO_NODE
        time.sleep(max(0.0, kill_at - time.time()))
        self._check_still_running(run_id, node)
        return node

    @staticmethod
    def _check_still_running(run_id: int, node: str) -> None:
        from apps.orchestration.models import StageExecution

        status = StageExecution.objects.values_list("status", flat=True).get(run_id=run_id, node_id=node, attempt=1)
        if status != StageExecution.Status.RUNNING:
            raise RoundFailed(f"run {run_id}: missed the kill moment, node {node} was already {status}")

    def _wait_end(self, run_id: int, t_kill: float):
        """The run once it is terminal; RoundFailed after ``run_timeout`` from the kill."""
        from apps.orchestration.models import PipelineRun

        deadline = t_kill + self.run_timeout
        while True:
            run = PipelineRun.objects.get(pk=run_id)
            if run.is_terminal:
                return run
            if time.time() > deadline:
                raise RoundFailed(f"run {run_id} still {run.status} {self.run_timeout:g}s after the kill "
                                  f"(lease until {run.lease_expires_at}, held by {run.claimed_by}); "
                                  f"see {self.survivor.log_path}")
            if self.survivor.proc.poll() is not None:
                raise RoundFailed(f"the survivor exited with {self.survivor.proc.returncode}; "
                                  f"see {self.survivor.log_path}")
            time.sleep(0.1)

    def _check(self, run, moment: str) -> list[list]:
        """Check the ended run's record; returns its stages as [node, attempt, status]."""
        from apps.orchestration.models import PipelineRun, StageExecution

        problems = []
        if run.status != PipelineRun.Status.COMPLETED:
            problems.append(f"status {run.status}, error {run.error!r}")
        rows = list(StageExecution.objects.filter(run_id=run.pk).order_by("pk").values(
            "node_id", "attempt", "status", "errors"))
        stages = [[r["node_id"], r["attempt"], r["status"]] for r in rows]
        for node in self.path:
            mine = [r for r in rows if r["node_id"] == node]
            succeeded = sum(r["status"] == StageExecution.Status.SUCCEEDED for r in mine)
            if succeeded != 1:
                problems.append(f"node {node} succeeded {succeeded} times")
            if sorted(r["attempt"] for r in mine) != list(range(1, len(mine) + 1)):
                problems.append(f"node {node} has attempts {[r['attempt'] for r in mine]}")
        if any(r["node_id"] not in self.path for r in rows):
            problems.append("stages of nodes outside the definition")
        running = [r for r in rows if r["status"] == StageExecution.Status.RUNNING]
        if running:
            problems.append(f"{len(running)} stage(s) left running")
        failed = [r for r in rows if r["status"] == StageExecution.Status.FAILED]
        for r in failed:
            if not (r["errors"] and str(r["errors"][0]).startswith("interrupted: the process executing it (")):
                problems.append(f"node {r['node_id']} attempt {r['attempt']} failed: {r['errors']!r}")
        interrupted = [(r["node_id"], r["attempt"]) for r in failed]
        # Right after the claim, the kill may come before the first node's stage was written.
        allowed = [[], [("first", 1)]] if moment == "claim" else [[(moment, 1)]]
        if interrupted not in allowed:
            problems.append(f"interrupted attempts {interrupted}, expected one of {allowed}")
        pid = _pid_of(run.claimed_by or "")
        if pid is None or pid not in self.survivor.pids():
            problems.append(f"ended by {run.claimed_by!r}, not by the survivor {sorted(self.survivor.pids())}")
        recovered = self._recovery_line(run.pk)
        if recovered is None:
            problems.append(f"no event=run.recovered line for run {run.pk} in {self.survivor.log_path}")
        elif "reason=lease_expired" not in recovered:
            problems.append(f"recovered for another reason: {recovered.strip()}")
        if problems:
            raise RoundFailed(f"run {run.pk} (kill at {moment}): " + "; ".join(problems) + f"; stages {stages}")
        return stages

    def _recovery_line(self, run_id: int) -> str | None:
        """The survivor's ``event=run.recovered`` line for ``run_id`` (waited for, bounded)."""
        needle = f"event=run.recovered run_id={run_id} "
        deadline = time.monotonic() + LOG_TIMEOUT
        while True:
            text = self.survivor.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if needle in line:
                    return line
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
