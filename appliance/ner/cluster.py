"""``appliance infer --engine ray``: batch inference in an actor pool on a Ray cluster.

The export is read where the command runs (the driver), by the same checked
readers as the local engine: rejected rows and duplicate ids are reported the
same way, and notes already in an interrupted output are skipped through the
same journal. Chunks of notes go to a pool of Ray actors; their entities
come back in order, and the driver writes and commits them exactly as the
local engine does, so the output is byte for byte the same and a run stopped
at any point resumes with no note lost or written twice. (Ray Data's readers
would bypass the per-row checks and the ordered, journaled commit, so the
pool is fed by the driver instead.)

Each actor receives the package's files through Ray's object store, writes
them to a private temporary folder, checks the package signature with the
trusted public key and that its files are the ones the driver verified, loads
it (decrypting a real-zone package in memory with the data key) and removes
the folder. An actor that cannot verify or load the package reports why; the
run stops with that one line. An actor whose process dies (killed, out of
memory, its machine lost) is restarted by Ray, verifies the package again,
and the chunk it held is run again: prediction has no side effects, so
nothing is lost or duplicated. A chunk that loses its worker more than
:data:`RETRIES` times stops the run with a ClusterError; what was committed
stays and the same command resumes.

Without ``address`` a Ray instance is started on this machine, bound to the
loopback interface, and stopped at the end. Ray's usage statistics are
switched off (``RAY_USAGE_STATS_ENABLED=0``) before it is imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from appliance import __version__
from appliance.documents import Record
from appliance.errors import (
    ApplianceError,
    ClusterError,
    IntegrityError,
    UsageError,
    missing_dependency,
)
from appliance.ner.encoding import Entity
from appliance.ner.infer import Predictor, PredictSettings
from appliance.ner.package import verify_package
from appliance.security.keys import DataKey

RETRIES = 3  # restarts of a worker, and re-runs of a chunk whose worker died
IN_FLIGHT_PER_WORKER = 2  # chunks queued per worker, so none waits for the driver
LOCAL_OBJECT_STORE = 256 * 2**20  # bytes, for a Ray instance started here
PROBE_SECONDS = 5.0
START_SECONDS = 600.0  # for every worker to verify and load the package


def files_digest(manifest: dict[str, Any]) -> str:
    """One digest of a package manifest's file list (what a worker must have verified)."""
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()


def _error_class(name: str) -> type[ApplianceError]:
    from appliance import errors

    found = getattr(errors, name, None)
    if isinstance(found, type) and issubclass(found, ApplianceError):
        return found
    return ApplianceError


class Worker:
    """One actor of the pool: the verified package, loaded, tagging chunks of notes."""

    def __init__(
        self,
        files: dict[str, bytes] | str,
        public_key: bytes,
        digest: str,
        settings: PredictSettings,
        package_key: DataKey | None,
        where: str,
    ) -> None:
        self.predictor: Predictor | None = None
        self.error: tuple[str, str] | None = None
        self.info: dict[str, Any] = {"pid": os.getpid(), "appliance": __version__}
        if isinstance(files, str):  # the name of the run's PackageFiles actor
            import ray

            files = cast(dict[str, bytes], ray.get(ray.get_actor(files).files.remote()))
        try:
            self.predictor = self._load(files, public_key, digest, settings, package_key, where)
            self.info["providers"] = list(self.predictor.tagger.info.get("providers", []))
            self.info["normalized"] = self.predictor.normalizer is not None
        except ApplianceError as exc:
            self.error = (type(exc).__name__, str(exc))

    @staticmethod
    def _load(
        files: dict[str, bytes],
        public_key: bytes,
        digest: str,
        settings: PredictSettings,
        package_key: DataKey | None,
        where: str,
    ) -> Predictor:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        folder = Path(tempfile.mkdtemp(prefix="appliance-package-"))  # 0700
        try:
            for name, data in files.items():
                if "/" in name or name in ("", ".", ".."):
                    raise IntegrityError(f"{where}: a package file name is not a plain name")
                fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            try:
                manifest = verify_package(folder, Ed25519PublicKey.from_public_bytes(public_key))
            except ApplianceError as exc:
                raise type(exc)(str(exc).replace(str(folder), where)) from None
            if files_digest(manifest) != digest:
                raise IntegrityError(
                    f"{where}: the package a worker received is not the one the run verified"
                )
            return Predictor.load(folder, settings, package_key)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        import ray

        return {
            **self.info,
            "node": ray.get_runtime_context().get_node_id(),
            "error": self.error,
        }

    def predict(self, texts: Sequence[str]) -> list[list[Entity]]:
        if self.predictor is None:
            assert self.error is not None
            raise _error_class(self.error[0])(self.error[1])
        return self.predictor(texts)


class PackageFiles:
    """Holds a run's package files; each worker fetches them when it starts or restarts."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self._files = files

    def files(self) -> dict[str, bytes]:
        return self._files


def _import_ray(local: bool) -> Any:
    """Ray, configured before import: no usage statistics, token authentication, loopback when local."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage statistics leave the hospital
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Every connection to the cluster presents the cluster's token (the
    # RAY_AUTH_TOKEN variable or Ray's token file, see README).
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if local:
        # A private instance: reachable on loopback only, under a random token
        # no other user of this machine can read (no token file is written).
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    imported = "ray" in sys.modules
    try:
        import ray
    except ImportError:
        raise missing_dependency("ray", "ray", "--engine ray") from None
    if imported:
        # Ray read its settings when this process imported it: apply the above.
        from ray._private import ray_constants
        from ray._raylet import Config  # type: ignore[attr-defined]

        if local:
            ray_constants.ENABLE_RAY_CLUSTER = False
        Config.initialize("")
    return ray


def _probe(address: str) -> None:
    """Fail in seconds, with one line, when nothing listens at HOST:PORT (Ray itself retries for minutes)."""
    if address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--address {address}: expected HOST:PORT of the Ray head (or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}"
        ) from None


def _check_token() -> None:
    """A cluster started with a token refuses a driver without one, after minutes of retries: say so now."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get(
        "RAY_AUTH_TOKEN"
    ):
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not path.is_file():
        raise UsageError(
            "--address: no Ray token here; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the "
            "cluster's token (see README, batch inference across machines)"
        )


@dataclasses.dataclass
class RayPool:
    """The actors of one inference run, and the Ray connection they live on."""

    ray: Any
    actors: list[Any]
    providers: list[str]
    normalized: bool
    nodes: int
    store: Any = None  # the PackageFiles actor
    pids: list[int] = dataclasses.field(default_factory=list)  # each worker's first process

    def restarted(self) -> int:
        """How many workers run in another process than they started in (restarted by Ray)."""
        try:
            now = self.ray.get([a.describe.remote() for a in self.actors], timeout=30)
        except Exception:  # a worker gone for good: the run has already said so
            return 0
        return sum(1 for pid, info in zip(self.pids, now, strict=True) if info["pid"] != pid)

    @property
    def size(self) -> int:
        return len(self.actors)

    @classmethod
    def start(
        cls,
        package: Path,
        public_key: Any,
        manifest: dict[str, Any],
        settings: PredictSettings,
        *,
        package_key: DataKey | None = None,
        address: str | None = None,
        workers: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> RayPool:
        """Connect to (or start) Ray and start ``workers`` actors, each verifying ``package``."""
        if workers is not None and workers < 1:
            raise UsageError("--workers must be at least 1")
        if settings.threads is not None and settings.threads < 1:
            raise UsageError("--threads must be at least 1")
        if address:
            _probe(address)
            _check_token()
        ray = _import_ray(local=not address)
        say = log or (lambda _line: None)
        files = {p.name: p.read_bytes() for p in sorted(package.iterdir()) if p.is_file()}
        size = sum(len(b) for b in files.values())
        t0 = time.monotonic()
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            else:
                ray.init(
                    address="local",
                    num_cpus=workers * (settings.threads or 1) if workers else None,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    object_store_memory=max(LOCAL_OBJECT_STORE, 3 * size),
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
        except ApplianceError:
            raise
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError from ray.init
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"cannot start or reach {where}: {first}") from None
        try:
            pool = cls._actors(
                ray, files, public_key, manifest, settings, package_key, workers, str(package)
            )
        except BaseException:
            ray.shutdown()
            raise
        say(
            f"ray: {pool.size} workers on {pool.nodes} node(s), package ({size / 2**20:.1f} MiB) "
            f"verified by each, providers {', '.join(pool.providers) or '?'} "
            f"({time.monotonic() - t0:.1f} s)"
        )
        return pool

    @classmethod
    def _actors(
        cls,
        ray: Any,
        files: dict[str, bytes],
        public_key: Any,
        manifest: dict[str, Any],
        settings: PredictSettings,
        package_key: DataKey | None,
        workers: int | None,
        where: str,
    ) -> RayPool:
        from cryptography.hazmat.primitives import serialization

        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        device = settings.device
        if device == "cuda" and gpus == 0:
            raise UsageError("--device cuda: the Ray cluster has no GPU")
        use_gpu = gpus > 0 and device in ("auto", "cuda")
        threads = settings.threads or 1
        cpus = int(resources.get("CPU", 0))
        if workers is None:
            workers = gpus if use_gpu else max(1, cpus // threads)
        # Actors the cluster cannot place would wait for resources forever.
        if use_gpu and workers > gpus:
            raise UsageError(
                f"--workers {workers}: the Ray cluster has {gpus} GPU(s), one per worker"
            )
        if not use_gpu and workers * threads > cpus:
            raise UsageError(
                f"--workers {workers} x --threads {threads} needs {workers * threads} CPUs; "
                f"the Ray cluster has {cpus}"
            )
        worker_settings = dataclasses.replace(
            settings, device="cuda" if use_gpu else "cpu", threads=threads
        )
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        store_name = f"appliance-package-{secrets.token_hex(8)}"
        store = ray.remote(PackageFiles).options(name=store_name, num_cpus=0).remote(files)
        remote = ray.remote(Worker).options(
            num_cpus=threads,
            num_gpus=1 if use_gpu else 0,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
            scheduling_strategy="SPREAD",
        )
        actors = [
            remote.remote(
                store_name,
                raw,
                files_digest(manifest),
                worker_settings,
                package_key,
                where,
            )
            for _ in range(workers)
        ]
        try:
            infos = ray.get([a.describe.remote() for a in actors], timeout=START_SECONDS)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(
                f"the Ray workers did not start within {START_SECONDS:.0f} s "
                "(busy cluster, or a node that cannot load the package); see `ray status`"
            ) from None
        for info in infos:
            if info["error"] is not None:
                raise _error_class(info["error"][0])(info["error"][1])
            if info["appliance"] != __version__:
                raise ClusterError(
                    f"a Ray worker runs appliance {info['appliance']}, this machine "
                    f"{__version__}; install the same version on every node"
                )
        return cls(
            ray=ray,
            actors=actors,
            providers=sorted({p for i in infos for p in i.get("providers", [])[:1]}),
            normalized=bool(infos[0].get("normalized")),
            nodes=len({i["node"] for i in infos}),
            store=store,
            pids=[i["pid"] for i in infos],
        )

    def map(
        self, chunks: Iterator[list[Record]]
    ) -> Iterator[tuple[list[Record], list[list[Entity]]]]:
        """Each chunk with its notes' entities, in the order the chunks came."""
        pending: deque[tuple[list[Record], Any, int]] = deque()
        load = [0] * len(self.actors)
        for chunk in chunks:
            i = min(range(len(self.actors)), key=load.__getitem__)
            pending.append((chunk, self.actors[i].predict.remote([r.text for r in chunk]), i))
            load[i] += 1
            while len(pending) >= IN_FLIGHT_PER_WORKER * len(self.actors):
                yield self._take(pending, load)
        while pending:
            yield self._take(pending, load)

    def _take(
        self, pending: deque[tuple[list[Record], Any, int]], load: list[int]
    ) -> tuple[list[Record], list[list[Entity]]]:
        chunk, ref, i = pending.popleft()
        load[i] -= 1
        exceptions = self.ray.exceptions
        try:
            found = self.ray.get(ref)
        except exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if isinstance(cause, ApplianceError):
                raise cause from None
            raise
        except exceptions.RayActorError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(
                f"a Ray worker died more than {RETRIES} times running a chunk of notes "
                f"({first}); the notes before it are committed: run the same command to resume"
            ) from None
        return chunk, found

    def close(self) -> None:
        for actor in [*self.actors, self.store]:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(actor)
        self.ray.shutdown()
