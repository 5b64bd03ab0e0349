"""Shared pytest fixtures and the test environment.

Set at import time, so before any test module imports transformers, torch or Ray (Ray's workers inherit them):
- ``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``: models come from PyPI packages on disk, never from a hub.
- ``RAY_USAGE_STATS_ENABLED=0``: no usage-stats prompt or upload attempt.
- ``TORCH_EXTENSIONS_DIR`` (unless already set): DeepSpeed's JIT-compiled ops (~50 s for ``shm_comm``) go to
  ``~/.cache/ifshm-ray/torch_extensions`` and are reused by later runs, also from fresh clones.

Fixtures:
- ``ray_session``: one local Ray for the whole pytest session, started lazily by the first test that asks for
  it and shut down at the end. It has its own short temp dir (no ``/tmp/ray`` clash with another Ray on the
  machine) and sends Tune/RLlib result directories to a pytest temp dir instead of ``~/ray_results``.
  Ray 2.60 ignores ``TUNE_RESULT_DIR`` / ``RAY_AIR_LOCAL_CACHE_DIR`` (``tune.run`` raises if they are set),
  so the default storage path is patched instead.
- ``tmp_out``: an empty output directory for one test.

Helper: :func:`load_job` imports a job script (``jobs/<name>.py``) by its file path, so tests can call its
``main(argv)`` in-process; the package itself is installed (``pip install -e .``), nothing is put on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault(
    "TORCH_EXTENSIONS_DIR",
    str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ifshm-ray" / "torch_extensions"),
)

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def load_job(name: str) -> ModuleType:
    """The job script ``jobs/<name>.py`` as a module (loaded once per session, as ``ifshm_job_<name>``)."""
    return _load_script(JOBS / f"{name}.py", f"ifshm_job_{name}")


def load_benchmark(name: str) -> ModuleType:
    """The benchmark script ``benchmarks/<name>.py`` as a module (loaded once per session, as
    ``ifshm_benchmark_<name>``)."""
    return _load_script(JOBS.parent / "benchmarks" / f"{name}.py", f"ifshm_benchmark_{name}")


def _load_script(path: Path, module_name: str) -> ModuleType:
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before running it: pydantic and dataclasses look their module up
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]


# Modules that bind ray.train.constants.DEFAULT_STORAGE_PATH (~/ray_results) at import time; the others read it
# from ray.train.constants when called.
_STORAGE_PATH_MODULES = (
    "ray.train.constants",
    "ray.tune.trainable.trainable",  # Algorithm.build_algo() / Trainable logdirs
    "ray.tune.experiment.experiment",
)


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """A local Ray (2 CPUs, no dashboard) shared by every test that requests it; yields ray.init's context."""
    import importlib

    import ray

    storage = str(tmp_path_factory.mktemp("ray_results"))
    # Short path: Ray's unix sockets live under it (107-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="ifr-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:
        for name in _STORAGE_PATH_MODULES:
            mp.setattr(importlib.import_module(name), "DEFAULT_STORAGE_PATH", storage)
        # address="local": always start a new cluster, even if RAY_ADDRESS points at another one.
        context = ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=temp_dir,
        )
        try:
            yield context
        finally:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def tmp_out(tmp_path: Path) -> Path:
    """An empty directory for one test's outputs (results, checkpoints, plots)."""
    out = tmp_path / "out"
    out.mkdir()
    return out
