"""Every Python block of the README runs as written.

Each ```python block is compiled with the README's own line numbers (a traceback points
at README.md:LINE) and executed verbatim in a fresh namespace, in an empty working
folder (``examples/`` linked in, as in a checkout), with the real offline default models.
Blocks whose first line is ``# needs: gpu`` (a 7B model) or ``# needs: server`` (a
running ``meteora serve``) are only compiled; they are listed in :data:`MARKED`, so a new
exception has to be added here on purpose. Some blocks get extra checks on what they
computed (:data:`CHECKS`). The quick start also runs from the built wheel in a fresh venv
(``tests/test_wheel.py``).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NEEDS = {"gpu": "a GPU and a 7B model from the hub", "server": "a running `meteora serve`"}
#: the blocks that are only compiled: heading -> what they need
MARKED = {
    "The rerank service: `meteora serve`": "server",
    "Training rationale adapters": "gpu",
}


@dataclass(frozen=True)
class Block:
    line: int  # README line of the block's first code line
    heading: str  # the section it is in ("##" heading, with the "###" one after a comma)
    code: str

    @property
    def needs(self) -> str | None:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        m = re.match(r"#\s*needs:\s*(\w+)", first)
        return m.group(1) if m else None

    @property
    def id(self) -> str:
        return f"L{self.line}-" + re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")[:40]


def readme_blocks(text: str | None = None) -> list[Block]:
    """The ```python blocks of the README, in order."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks, h2, h3, i = [], "", "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            h2, h3 = line[3:].strip(), ""
        elif line.startswith("### "):
            h3 = line[4:].strip()
        elif line.strip() == "```python":
            start = i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            heading = h2 + (f", {h3}" if h3 else "")
            blocks.append(Block(line=start + 1, heading=heading, code="\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return blocks


BLOCKS = readme_blocks()
RUNNABLE = [b for b in BLOCKS if b.needs is None]


def _compile(block: Block) -> Any:
    # leading newlines keep the README's line numbers in tracebacks
    return compile("\n" * (block.line - 1) + block.code, str(README), "exec")


def _third_party_imports(block: Block) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(block.code)):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return {m for m in mods if m != "meteora"}


# ------------------------------------------------------------------ extra checks per block
def _check_quick_start(ns: dict[str, Any], out: str) -> None:
    res, results, hits = ns["res"], ns["results"], ns["hits"]
    assert [p.text for p in res.selected] == ["Aspirin reduced recurrent stroke by 20% (HR 0.80)."]
    assert len(res.ranked) == 2 and res.rationales and "Selected:" in out
    assert results[1].selected_ids == ["b"], results[1].selected_ids  # the dogs question picks the dogs passage
    assert "Aspirin" in hits.selected[0].text


def _check_rank(ns: dict[str, Any], out: str) -> None:
    ranked = ns["ranked"]
    assert [h.index for h in ranked] == [1, 0] and ranked[0].selected and not ranked[1].selected
    assert all(0.0 <= h.relevance_score <= 1.0 for h in ranked) and out.splitlines()[-1] == "1"


def _check_retrieval(ns: dict[str, Any], out: str) -> None:
    assert ns["hits"].ids[0] == "a-0" and (Path("my-index") / "meteora-index.json").is_file()


def _check_langchain(ns: dict[str, Any], out: str) -> None:
    assert "aspirin" in out.lower() and "Dogs" not in out


def _check_poisoning(ns: dict[str, Any], out: str) -> None:
    final = out.strip().splitlines()[-1]  # "selected (n): ids", after verification
    assert "verifier dropped b-0: INSTRUCTION" in out  # the injection was selected, then dropped
    assert final.startswith("selected (") and "a-0" in final and "b-0" not in final


def _check_added_document(ns: dict[str, Any], out: str) -> None:
    res = ns["res"]
    assert "added-0" not in res.selected_ids and "trial-2" in res.selected_ids  # dropped; the evidence is back
    [conflict] = res.conflicts
    assert conflict.dropped == ["added-0"] and "trial-2" in conflict.kept


CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "Quick start: select evidence": _check_quick_start,
    "Quick start: select evidence, Coming from a cross-encoder reranker": _check_rank,
    "Retrieval": _check_retrieval,
    "LangChain": _check_langchain,
    "LlamaIndex": _check_langchain,
    "Poisoning by added documents: the default defence": _check_added_document,
    "Poisoning inside the abstract: the paper's protocol (`--attack same-document`)": _check_poisoning,
}


# ------------------------------------------------------------------ tests
def test_the_readme_blocks_are_found_and_every_block_compiles():
    assert len(BLOCKS) >= 8
    assert BLOCKS[0].heading == "Quick start: select evidence" and "rr = Reranker()" in BLOCKS[0].code
    for block in BLOCKS:
        _compile(block)
    assert set(CHECKS) <= {b.heading for b in RUNNABLE}, "a CHECKS entry names no runnable block"


def test_only_the_listed_blocks_are_exempt():
    marked = {b.heading: b.needs for b in BLOCKS if b.needs is not None}
    assert marked == MARKED, "a README block gained or lost a `# needs:` line: update MARKED on purpose"
    assert set(marked.values()) <= set(NEEDS)
    text = README.read_text(encoding="utf-8")
    assert "# needs: gpu" in text and "# needs: server" in text  # the convention is visible to readers


def test_a_block_that_fails_points_at_its_readme_line():
    [block] = readme_blocks("## T\n\ntext\n\n```python\nx = 1\nundefined_name\n```\n")
    assert block.line == 6 and block.heading == "T" and block.needs is None
    with pytest.raises(NameError) as exc:
        exec(_compile(block), {})
    assert exc.traceback[-1].lineno + 1 == 7  # pytest's lineno is 0-based: README line 7
    [marked] = readme_blocks("## S\n```python\n# needs: server (x)\nimport httpx\n```\n")
    assert marked.needs == "server"


def test_no_huggingface_cli_left():
    """Current huggingface_hub installs only the `hf` command."""
    files = [README, *sorted((ROOT / "meteora").rglob("*.py")), *sorted((ROOT / "examples").rglob("*.py"))]
    stale = [str(f.relative_to(ROOT)) for f in files if "huggingface-cli" in f.read_text(encoding="utf-8")]
    assert stale == []


def test_reliability_numbers_come_from_the_robustness_results():
    """The README's bad-input sentence quotes ``benchmarks/results/robustness.json``,
    and that file is a full run of the matrix as it is now (as many cases as the suite
    builds, every one as expected)."""
    import json

    from robustness_cases import HANG_SECONDS, build_cases

    results = json.loads((ROOT / "benchmarks" / "results" / "robustness.json").read_text(encoding="utf-8"))
    counts = results["counts"]
    assert results["command"].endswith("benchmarks/robustness.py")  # the whole matrix, no --group
    assert results["cases"] == len(build_cases()) == results["passed"] == len(results["rows"])
    assert results["failing"] == [] and sum(counts.values()) == results["cases"]
    text = " ".join(README.read_text(encoding="utf-8").split())
    m = re.search(r"runs a matrix of (\d+) hostile inputs.*?\(`python benchmarks/robustness.py`\) is the table: "
                  r"(\d+) clear errors, (\d+) correct results, \*\*(\d+) raw tracebacks, (\d+) silently wrong "
                  r"results, (\d+) data loss, (\d+) hangs\*\* \(a case still running after (\d+) minutes", text)
    assert m, "the README's robustness sentence changed: update this test with it"
    quoted = [int(g) for g in m.groups()]
    assert quoted == [results["cases"], counts["clear_error"], counts["correct_result"], counts["raw_traceback"],
                      counts["silent_wrong"], counts["data_loss"], counts["hang"], HANG_SECONDS / 60]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_readme_block_runs(block, tmp_path, monkeypatch, capsys):
    from meteora.doctor import default_reranker_problem

    problem = default_reranker_problem()
    if problem is not None:
        pytest.skip(problem)
    for module in sorted(_third_party_imports(block)):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (an optional extra)")
    for var, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("METEORA_NUM_THREADS", __import__("os").environ.get("METEORA_NUM_THREADS", "1"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(_compile(block), namespace)
    out = capsys.readouterr().out
    check = CHECKS.get(block.heading)
    if check is not None:
        check(namespace, out)
