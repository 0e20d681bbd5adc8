"""The docs site and the README: the site builds strictly, and every example on them runs.

Each fenced block of a page is one of:

- ``bash``: run in the page's session folder, in order, after the tiny rewrites below;
- ``python``: executed in the session folder, one namespace per page; a line
  ``print(...)  # -> text`` must print exactly ``text``;
- ``yaml`` after ``<!-- file: NAME -->``: written to NAME (then made tiny), for the commands after it;
- ``yaml`` after ``<!-- config -->``: a config fragment, which must merge into our defaults;
- any block after ``<!-- not run: reason -->``: skipped, and the reason must say what covers it;
- other languages (``bibtex``, plain text): data, not examples.

The rewrites make the shown commands run on tiny data: every YAML config in the session trains a
4-channel MedNeXt with one block per stage for 2 iterations, so ``checkpoint_00200`` is
``checkpoint_00002``. The commands themselves are run as shown.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import pytest
import yaml

from connectomics_mednext.config import get_native_defaults, merge_values

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [
    "getting-started.md",
    "own-data.md",
    "segmentation.md",
    "big-volumes.md",
    "model.md",
    "pytc.md",
    "index.md",
    "promises.md",
    "architecture.md",
    "config-keys.md",
    "errors.md",
    "api.md",
    "benchmarks.md",
]
TINY_CONFIG = {
    "MODEL": {"MEDNEXT": {"N_CHANNELS": 4, "BLOCK_COUNTS": [1] * 9}},
    "SOLVER": {"ITERATION_TOTAL": 2, "ITERATION_SAVE": 2, "ITERATION_VAL": 2},
    "MONITOR": {"ITERATION_NUM": [1, 2]},
}
TINY_TEXT = {"checkpoint_00200": "checkpoint_00002"}
MARKER = re.compile(r"<!--\s*(not run|file|config|prepare):?\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
EXPECT = re.compile(r"^(\s*)print\((.*)\)\s*# -> (.*)$")


class Block(NamedTuple):
    language: str
    text: str
    marker: Optional[str]
    argument: str
    line: int


def blocks_of(path: Path) -> List[Block]:
    """The fenced blocks of a Markdown page, each with the marker comment on the line before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened:
            index += 1
            continue
        before = lines[index - 1] if index else ""
        marker = MARKER.match(before.strip())
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        found.append(
            Block(
                opened.group(1),
                "\n".join(lines[index + 1 : end]) + "\n",
                marker.group(1) if marker else None,
                marker.group(2) if marker else "",
                index + 1,
            )
        )
        index = end + 1
    return found


def tiny(config: Dict) -> Dict:
    """``config`` with TINY_CONFIG's values in place of its own."""

    def merge(into: Dict, values: Dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                merge(into.setdefault(key, {}), value)
            else:
                into[key] = value

    merge(config, TINY_CONFIG)
    return config


def make_tiny(path: Path) -> None:
    path.write_text(yaml.safe_dump(tiny(yaml.safe_load(path.read_text()) or {})))


def prepare_reference_checkpoint(folder: Path) -> None:
    """An nnU-Net-style ``.model`` file of a MedNeXt-B (14 classes), as the reference saves one."""
    import torch

    from connectomics_mednext import create_mednext_v1

    model = create_mednext_v1(1, 14, "B", kernel_size=3, deep_supervision=True, ds_output="list")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {"state_dict": state, "epoch": 1, "plans": {"note": "pickled beside the weights"}},
        folder / "model_final_checkpoint.model",
    )


def prepare_small_kernel_weights(folder: Path) -> None:
    import torch

    from connectomics_mednext import create_mednext_v1

    torch.save(
        create_mednext_v1(1, 2, "S", kernel_size=3, deep_supervision=True).state_dict(), folder / "mednext_s_k3.pth"
    )


PREPARE = {"reference-checkpoint": prepare_reference_checkpoint, "small-kernel-weights": prepare_small_kernel_weights}


def tiny_text(text: str) -> str:
    for old, new in TINY_TEXT.items():
        text = text.replace(old, new)
    return text


def run_python(text: str, namespace: Dict, page: str, line: int) -> None:
    text = tiny_text(text)
    checked = []
    for source_line in text.splitlines():
        expected = EXPECT.match(source_line)
        if expected:
            indent, arguments, output = expected.groups()
            checked.append(f"{indent}_expect({output!r}, {arguments})")
        else:
            checked.append(source_line)
    code = compile("\n".join(checked), f"{page}:{line}", "exec")
    exec(code, namespace)


def _expect(expected: str, *values) -> None:
    shown = " ".join(str(value) for value in values)
    assert shown == expected, f"printed {shown!r}, the docs say {expected!r}"


def run_bash(text: str, folder: Path, page: str, line: int) -> None:
    text = tiny_text(text)
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", text],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PWD": str(folder)},
    )
    assert done.returncode == 0, (
        f"{page}:{line} failed:\n{text}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )


def run_page(page: Path, folder: Path, namespace: Dict) -> int:
    """Run every example of ``page`` in ``folder``; return how many ran."""
    ran = 0
    for block in blocks_of(page):
        where = f"{page.name}:{block.line}"
        if block.marker == "not run":
            assert len(block.argument) > 20, f"{where}: say why the block is not run and what covers it"
            continue
        if block.marker == "prepare":
            PREPARE[block.argument](folder)
        if block.language == "yaml":
            assert block.marker in ("file", "config"), (
                f"{where}: a yaml block needs <!-- file: NAME --> or <!-- config -->"
            )
            data = yaml.safe_load(block.text)
            merge_values(get_native_defaults(), data, where)  # every key and type is one our engine reads
            if block.marker == "file":
                (folder / block.argument).write_text(block.text)
                make_tiny(folder / block.argument)
            ran += 1
        elif block.language == "bash":
            run_bash(block.text, folder, page.name, block.line)
            ran += 1
        elif block.language == "python":
            cwd = os.getcwd()
            os.chdir(folder)
            try:
                run_python(block.text, namespace, page.name, block.line)
            finally:
                os.chdir(cwd)
            ran += 1
        else:
            assert block.language in ("bibtex", "text", ""), f"{where}: no rule to run a {block.language} block"
    return ran


def new_session(folder: Path) -> Path:
    """A folder laid out like the source tree for the examples: configs (made tiny) and scripts."""
    shutil.copytree(ROOT / "configs", folder / "configs")
    for config in (folder / "configs").glob("*.yaml"):
        if config.name != "MedNeXt-Base.yaml":
            make_tiny(config)
    shutil.copytree(ROOT / "scripts", folder / "scripts")
    return folder


@pytest.fixture(scope="module")
def docs_session(tmp_path_factory):
    return new_session(tmp_path_factory.mktemp("docs")), {"_expect": _expect, "__name__": "__docs__"}


@pytest.mark.parametrize("page", PAGES)
def test_every_example_runs(page, docs_session):
    # The pages share one folder in this order: later pages use what the quick start trained.
    folder, namespace = docs_session
    namespace = {**namespace, "_expect": _expect}
    run_page(DOCS / page, folder, namespace)


def test_readme_examples_run(tmp_path):
    assert run_page(ROOT / "README.md", new_session(tmp_path), {"_expect": _expect}) >= 3


def test_readme_is_short_and_sends_readers_to_the_docs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for page in PAGES:
        assert f"(docs/{page})" in text or page == "index.md", page
    # Its figures are the results files' (python docs/hooks.py writes them in).
    assert load_hooks().readme_with_figures(text) == text


def test_every_page_is_in_the_nav_and_tested():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def files(entries):
        for entry in entries:
            for value in entry.values():
                yield from files(value) if isinstance(value, list) else [value]

    assert sorted(files(nav)) == sorted(PAGES) == sorted(p.name for p in DOCS.glob("*.md"))


def test_site_builds_strictly(tmp_path):
    # Strict: a broken link, a missing anchor, a renamed symbol or a docstring griffe cannot read fails.
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "config-keys" / "index.html").is_file()


def load_hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_config_key_is_documented_by_its_comment():
    rows = load_hooks().config_key_rows()
    assert len(rows) == len(set(row[0] for row in rows)) > 100
    assert [key for key, _, comment, _ in rows if not comment] == []
    assert ("MODEL.MEDNEXT_SIZE", "'S'") in [(key, default) for key, default, _, ours in rows if ours]


def test_every_raise_of_a_user_error_is_on_the_errors_page():
    hooks = load_hooks()
    types = hooks.user_error_types()
    pattern = re.compile(r"raise (" + "|".join(types) + r")\(")
    raised = {
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "connectomics_mednext").rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line) and "__main__" not in path.name
    }
    listed = {where for _, where, _, _ in hooks.error_sites()}
    assert raised <= listed
    markdown = hooks.errors_markdown()
    assert "must lie in 0..1" in markdown


def test_api_page_documents_every_public_name():
    import connectomics_mednext

    paths = load_hooks().api_names()
    for name in connectomics_mednext.__all__:
        if not name.startswith("_"):
            assert any(path.endswith(f".{name}") for path in paths), name


def test_architecture_names_every_module():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    tree = text[text.index("```") : text.index("```", text.index("```") + 3)]
    named = set(re.findall(r"([\w]+\.py)", tree))
    modules = {p.name for p in (ROOT / "connectomics_mednext").rglob("*.py") if p.name != "__main__.py"}
    assert modules - named == set()
    assert named - modules - {"main.py", "export_slice.py", "hooks.py", "test_docs.py"} == set()


def test_help_shows_training_and_predicting_a_new_volume():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "main.py"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    examples = done.stdout[done.stdout.index("examples:") :]
    assert "--config-base configs/MedNeXt-Base.yaml --config-file my.yaml" in examples
    assert "--inference --checkpoint" in examples and "INFERENCE.IMAGE_NAME /abs/path/volume.h5" in examples


def test_examples_marked_not_run_name_what_covers_them():
    for page in [DOCS / p for p in PAGES] + [ROOT / "README.md"]:
        for block in blocks_of(page):
            if block.marker == "not run":
                named = re.findall(r"(tests/\w+\.py|\.ci/run)", block.argument)
                for path in named:
                    assert (ROOT / path).exists(), f"{page.name}:{block.line} names {path}, which does not exist"


def test_python_examples_parse():
    for page in [DOCS / p for p in PAGES] + [ROOT / "README.md"]:
        for block in blocks_of(page):
            if block.language == "python":
                ast.parse(block.text)


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("figure", sorted(load_hooks().FIGURE_RESULTS))
def test_figures_are_no_older_than_the_code_they_describe(figure):
    hooks = load_hooks()
    assert any(f"<!-- generated: figures {figure} -->" in (DOCS / page).read_text() for page in PAGES)
    for name in hooks.FIGURE_RESULTS[figure]:
        record = hooks.read_results(name)["provenance"]
        assert record["machine"] and record["date"] and record["describes"]
        assert record["uncommitted"] == [], f"{name} was measured on uncommitted code: {record['uncommitted']}"
        if git("cat-file", "-e", f"{record['commit']}^{{commit}}").returncode != 0:
            pytest.skip(f"commit {record['commit'][:10]} of {name} is not in this checkout's history")
        changed = git("log", "--format=%h %s", f"{record['commit']}..HEAD", "--", *record["describes"]).stdout
        assert changed == "", (
            f"{name} is older than the code it describes; rerun its benchmark. Changed since:\n{changed}"
        )
