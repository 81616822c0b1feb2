"""The Ray engine's driver loop: tasks to encoder actors, a bounded number in flight, results committed as
they come back.

Memory stays flat: at most `INFLIGHT_PER_ENCODER` tasks per encoder are in flight, and only their reader
tasks are submitted, so decoded pixels in the object store are bounded by that window. When an actor or its
node dies, the tasks it held run again on another actor (`MAX_ATTEMPTS` in all): their shards are written by
whoever finishes them and listed in the manifest once, by the driver, so the result has exactly the rows of
an uninterrupted run.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.plan import Task
from pipelines.ray_cluster.connect import NodeInfo, alive_nodes
from pipelines.ray_cluster.decode import submit_chunks
from pipelines.ray_cluster.encoder import EncoderActor, TaskDone, TaskJob
from pipelines.tracker import StageTimes
from pipelines.writer import Written
from radretrieve.archive.records import RemoteArchive
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.models.protocol import Encoder
from radretrieve.outdir.manifest import Manifest

log = logging.getLogger(__name__)
INFLIGHT_PER_ENCODER = 2  # tasks queued per actor: one running, one decoding ahead
MAX_ATTEMPTS = 4  # runs of one task before the job gives up (its actors or nodes kept dying)
CHUNK_ITEMS = 8  # items per reader task
WAIT_SECONDS = 1.0  # how often the progress line refreshes while waiting


@dataclass(frozen=True)
class RayPlan:
    """What the driver needs to run the tasks."""

    # the archive root as every node sees it, or a server (`RemoteArchive`): the source object itself, which the
    # reader tasks on the workers fetch from (credentials inside it, never in its repr)
    root: str | RemoteArchive
    out_dir: str  # out dir, as every node sees it
    manifest: Manifest  # for the shards' metadata
    encoders: int  # CPU encoder actors (0: one per node; ignored where the cluster has GPUs)
    batch_slices: int  # slices per encoder call
    device: str | None = None  # encoder device ("cuda" on GPU actors; None: the actor's default)
    real_sources: dict[int, str] = field(default_factory=dict)  # --anonymise-paths


@dataclass
class EncoderStats:
    """One actor's share, for the summary."""

    node: str
    threads: int  # torch intra-op threads it encoded on
    nice: int  # its process's niceness
    items: int = 0
    tasks: int = 0


def make_encoders(ray: Any, model: Encoder, encoders: int, batch_slices: int, nodes: list[NodeInfo]) -> list[Any]:
    """One actor per GPU where the cluster has GPUs, else `encoders` CPU actors (0: one per node).

    CPU actors are capped so that at least one CPU is left for the reader tasks: an actor waits for its
    task's decoded chunks, so actors holding every CPU would wait forever. The actors load the model in
    the background: the job starts them before it scans, so that their start-up overlaps the scan."""
    gpus = int(sum(n.gpus for n in nodes))
    if gpus:
        return [new_encoder(ray, model, batch_slices, None, gpu=True) for _ in range(gpus)]
    cpus = int(sum(n.cpus for n in nodes))
    if cpus < 2:
        raise RadRetrieveError(f"the Ray cluster has {cpus} CPU(s); the Ray engine needs 2 (an encoder and a reader)")
    count = max(1, min(encoders or len(nodes), cpus - 1))
    if encoders and count < encoders:
        log.warning("%d encoders asked for, %d started: %d CPUs must leave one to the readers", encoders, count, cpus)
    on_node = collections.Counter(i % len(nodes) for i in range(count))  # round robin: spread
    threads = [max(1, int(nodes[i % len(nodes)].cpus) // on_node[i % len(nodes)]) for i in range(count)]
    return [new_encoder(ray, model, batch_slices, nodes[i % len(nodes)], threads=threads[i]) for i in range(count)]


def new_encoder(
    ray: Any, model: Encoder, batch_slices: int, node: NodeInfo | None, gpu: bool = False, threads: int = 0
) -> Any:
    """An encoder actor, on `node` when given (soft: elsewhere if it has gone). Not restarted by Ray: the
    driver replaces lost actors itself, so a restart can never take the CPUs the readers need. A CPU actor
    encodes on `threads` torch threads (its node's CPUs shared among the node's encoders; 0: all its cores),
    like the local engine's encoder, though Ray reserves one CPU for it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    args = (model.source, model.fingerprint, batch_slices)
    if gpu:
        return ray.remote(num_cpus=1, num_gpus=1, max_restarts=0)(EncoderActor).remote(*args, device="cuda")
    actor = ray.remote(num_cpus=1, max_restarts=0)(EncoderActor)
    if node is not None:
        actor = actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=True))
    return actor.remote(*args, threads=threads)


class Driver:
    """Runs the tasks on the actors and commits each finished task through `commit`.

    An actor whose call fails (ActorDiedError, or ActorUnavailableError: its node or process is gone but Ray
    has not said so yet) is lost: it is killed at once (`ray.kill`), so that the calls queued on it fail now
    instead of waiting for Ray's health checks (minutes, or never for a call that is queued behind a hung
    one), and so that it can write no shard late; its tasks run again elsewhere. It is replaced once its calls
    are back. Encoders never hold every CPU of the cluster, whose nodes can only be counted after Ray has
    noticed a loss: a replacement started on a count that was stale, or any encoder beyond what the cluster
    has left, is stopped (`retired`) as soon as the count drops, and its tasks run again on the others,
    without counting as a failed attempt; otherwise the encoders would wait forever for reader tasks that
    have no CPU to run on."""

    def __init__(
        self,
        ray: Any,
        actors: list[Any],
        plan: RayPlan,
        commit: Callable[[Written], None],
        bar: Any,
        replace: Callable[[], Any],
    ) -> None:
        self.ray, self.actors, self.plan, self.commit, self.bar = ray, actors, plan, commit, bar
        self.replace = replace  # makes a new actor for one that died
        self.inflight: dict[Any, tuple[Task, int, int]] = {}  # result ref -> (task, actor index, attempt)
        self.load = collections.Counter()  # actor index -> tasks in flight
        self.stats: dict[tuple[int, int], EncoderStats] = {}  # (actor index, generation) -> its share
        self.times = StageTimes()
        self.lost = 0  # task runs lost with an actor or a node
        self.errors = 0  # failed inputs recorded so far
        self.dead: set[int] = set()  # actors lost (and killed): replaced once their other calls are back
        self.replaced = 0  # actors started again
        self.retired: set[int] = set()  # slots given up: no CPU left for them beside the readers
        self.generation = collections.Counter()  # actor index -> how many times it was replaced
        self.born = {i: i for i in range(len(actors))}  # actor index -> order in which its actor was started
        self.started = time.perf_counter()

    def run(self, tasks: Sequence[Task], preprocess: Any) -> StageTimes:
        queue: collections.deque = collections.deque((t, 1) for t in tasks)
        while queue or self.inflight:
            nodes = alive_nodes(self.ray)
            self._fit(int(sum(n.cpus for n in nodes)))
            while queue and len(self.inflight) < INFLIGHT_PER_ENCODER * len(self.live()):
                task, attempt = queue.popleft()
                self._submit(task, attempt, preprocess)
            if not self.inflight:  # every encoder lost at once: the replacements come on the next round
                time.sleep(WAIT_SECONDS)
                continue
            done, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=WAIT_SECONDS)
            for ref in done:
                retry = self._finish(ref)
                if retry is not None:
                    queue.append(retry)
            self._progress(nodes)
        return self.times

    def live(self) -> list[int]:
        """Indexes of the actors that take tasks."""
        return [i for i in range(len(self.actors)) if i not in self.dead and i not in self.retired]

    def _fit(self, cpus: int) -> None:
        """Keep the encoders within the cluster's CPUs less one for the readers: stop the newest beyond that,
        start lost ones again where there is room (after a node is lost there may be none: then the pool
        shrinks, and the survivors go on)."""
        room = max(1, cpus - 1)
        newest_first = sorted(self.live(), key=lambda i: self.born[i], reverse=True)
        for index in newest_first[: max(0, len(newest_first) - room)]:
            log.warning("encoder %d stopped: the cluster has %d CPU(s) left, one of them for the readers", index, cpus)
            self._retire(index)
        for index in sorted(self.dead):
            if self.load[index] != 0:
                continue
            self.dead.discard(index)
            if len(self.live()) < room:
                self.actors[index] = self.replace()
                self.born[index] = len(self.actors) + self.replaced
                self.replaced += 1
                self.generation[index] += 1
            else:
                log.info("encoder %d not replaced: the %d CPU(s) left are the readers' and the others'", index, cpus)
                self.retired.add(index)

    def _retire(self, index: int) -> None:
        self.retired.add(index)
        self._kill(index)

    def _lose(self, index: int) -> None:
        """The actor at `index` failed a call: kill it (if not done yet), and replace it later."""
        if index in self.dead or index in self.retired:
            return
        self.dead.add(index)
        self._kill(index)

    def _kill(self, index: int) -> None:
        try:
            self.ray.kill(self.actors[index], no_restart=True)
        except Exception as exc:  # noqa: BLE001 - already gone with its node; its calls fail either way
            log.debug("encoder %d not killed (%s)", index, type(exc).__name__)

    def _submit(self, task: Task, attempt: int, preprocess: Any) -> None:
        index = min(self.live(), key=lambda i: self.load[i])
        works = [w for w in task.work if w.item is not None]
        chunks = submit_chunks(self.ray, works, self.plan.root, preprocess, CHUNK_ITEMS)
        sources = {
            w.item_id: self.plan.real_sources[w.item_id] for w in task.work if w.item_id in self.plan.real_sources
        }
        job = TaskJob(task, chunks, self.plan.root, self.plan.out_dir, self.plan.manifest, sources)
        self.inflight[self.actors[index].run.remote(job)] = (task, index, attempt)
        self.load[index] += 1

    def _finish(self, ref: Any) -> tuple[Task, int] | None:
        """Commit a finished task; a task whose actor died comes back to be queued again."""
        from ray.exceptions import RayError, RayTaskError

        task, index, attempt = self.inflight.pop(ref)
        self.load[index] -= 1
        try:
            done: TaskDone = self.ray.get(ref)
        except RayTaskError:
            raise  # an error in radretrieve's code (not a lost actor): stop, with its traceback under --debug
        except RayError as exc:  # the actor, its process or its node is gone (or was stopped by _fit)
            self.lost += 1
            retired = index in self.retired  # stopped by the driver: not the task's failure
            self._lose(index)
            if not retired and attempt >= MAX_ATTEMPTS:
                raise RadRetrieveError(f"task {task.task_id} failed {attempt} times ({type(exc).__name__})") from exc
            log.warning("encoder lost (%s): task %s runs again", type(exc).__name__, task.task_id)
            return task, attempt if retired else attempt + 1
        self.commit(done.written)
        self.errors += sum(done.written.errors.values())
        stat = self.stats.setdefault((index, self.generation[index]), EncoderStats(done.node, done.threads, done.nice))
        stat.node, stat.items, stat.tasks = done.node, stat.items + done.items, stat.tasks + 1
        self.times.decode += done.decode_seconds
        self.times.encode += done.encode_seconds
        self.times.slices += done.slices
        self.bar.update(task.n_images)
        return None

    def _progress(self, nodes: list[NodeInfo]) -> None:
        """The progress line: studies done (the bar), slices/s, errors, nodes and encoders alive."""
        rate = self.times.slices / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(
            slices_s=f"{rate:.0f}", errors=self.errors, nodes=len(nodes), encoders=len(self.live()), refresh=False
        )


def start_encoders(ray: Any, model: Encoder, encoders: int, batch_slices: int) -> list[Any]:
    """The job's encoder actors (see `make_encoders`), started on the cluster's alive nodes."""
    nodes = alive_nodes(ray)
    if not nodes:
        raise RadRetrieveError("the Ray cluster has no alive node")
    return make_encoders(ray, model, encoders, batch_slices, nodes)


def stop_encoders(ray: Any, actors: list[Any]) -> None:
    """Kill the actors (ones already gone are skipped: Ray may have reaped them with their node)."""
    for actor in actors:
        try:
            ray.kill(actor)
        except Exception as exc:  # noqa: BLE001 - a dead actor or node; nothing is left to stop
            log.debug("encoder not killed (%s)", type(exc).__name__)


def run_on_cluster(
    ray: Any,
    tasks: Sequence[Task],
    model: Encoder,
    plan: RayPlan,
    commit: Callable[[Written], None],
    bar: Any,
    actors: list[Any],
) -> tuple[StageTimes, dict[str, Any]]:
    """Run `tasks` on the encoder `actors` (from `start_encoders`; replacements for lost ones are put in
    their slots of the same list, so the caller's `stop_encoders(ray, actors)` stops them all); returns the
    stage times and the cluster part of the job summary."""
    nodes = alive_nodes(ray)
    gpu = bool(sum(n.gpus for n in nodes))
    driver = Driver(ray, actors, plan, commit, bar, lambda: new_encoder(ray, model, plan.batch_slices, None, gpu))
    times = driver.run(tasks, model.config.preprocess)
    encoders = [
        {"encoder": f"{i}.{g}" if g else str(i), "node": st.node, "threads": st.threads, "nice": st.nice}
        | {"items": st.items, "tasks": st.tasks}
        for (i, g), st in sorted(driver.stats.items())
    ]
    info = {
        "nodes": [n.name for n in nodes],
        "nodes_alive_at_end": [n.name for n in alive_nodes(ray)],
        "encoders": encoders,
        "task_runs_lost": driver.lost,
        "encoders_replaced": driver.replaced,
        "encoders_retired": len(driver.retired),
    }
    return times, info
