"""MkDocs hook: the reference pages are generated from the code at build time, so they cannot drift.

A page holds a marker comment, and the hook replaces it:

- ``<!-- generated: config-keys -->``: every config key our engine reads, from
  ``connectomics_mednext/config.py``, with its default and the comment written beside it;
- ``<!-- generated: errors -->``: every user-facing error, from the ``raise`` statements of the
  package, grouped by exception type, with the sentence each one prints;
- ``<!-- generated: api -->``: one mkdocstrings block per public name of the package.

``tests/test_docs.py`` imports this file too, to check what the pages promise.
"""

import ast
import importlib
import inspect
import io
import json
import os
import re
import tokenize
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Tuple

import connectomics_mednext
from connectomics_mednext import config, errors

PACKAGE_DIR = os.path.dirname(connectomics_mednext.__file__)
# Names documented on the API page beyond the package root's __all__: the calls the docs show.
EXTRA_API = (
    "connectomics_mednext.segment.segment_file",
    "connectomics_mednext.segment.segment_blockwise",
    "connectomics_mednext.segment.SegmentOptions",
    "connectomics_mednext.export_slice.export_slice",
    "connectomics_mednext.pytc.register",
    "connectomics_mednext.engine.trainer.Trainer",
)


# --- configuration keys -------------------------------------------------------------------------


def _comments(source: str) -> Dict[int, str]:
    """Line number -> the text of the comment on that line."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def _key_of(target: ast.expr) -> Optional[str]:
    """``MODEL.MEDNEXT.GRN`` for an assignment target ``cfg.MODEL.MEDNEXT.GRN`` (or ``_C....``)."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if not isinstance(target, ast.Name) or target.id not in ("cfg", "_C") or not parts:
        return None
    return ".".join(reversed(parts))


def key_comments() -> Dict[str, str]:
    """Dotted key -> the comment beside its assignment in config.py (the line's own, or the lines above)."""
    source = inspect.getsource(config)
    lines = source.splitlines()
    comments = _comments(source)
    found: Dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        key = _key_of(node.targets[0])
        if key is None:
            continue
        above = []
        line = node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        text = " ".join(above + [comments.get(node.end_lineno, "")]).strip()
        # A section built as CN({"ENABLED": ...}) documents its switch.
        if isinstance(node.value, ast.Call) and node.value.args and isinstance(node.value.args[0], ast.Dict):
            key = f"{key}.ENABLED"
        found[key] = text
    return found


def config_key_rows() -> List[Tuple[str, str, str, bool]]:
    """(key, default, comment, added by this package) for every key our engine reads, in schema order."""
    defaults = config.get_native_defaults()
    ours = set(config.config_keys(config.mednext_keys()))
    comments = key_comments()
    return [
        (key, repr(config.config_value(defaults, key)), comments.get(key, ""), key in ours)
        for key in config.config_keys(defaults)
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_keys_markdown() -> str:
    """The configuration reference: a table per top-level section."""
    sections: Dict[str, List[str]] = defaultdict(list)
    for key, default, comment, ours in config_key_rows():
        mark = " (added by this package)" if ours else ""
        sections[key.split(".")[0]].append(f"| `{key}` | `{_cell(default)}` | {_cell(comment)}{mark} |")
    parts = []
    for section, rows in sections.items():
        parts += [f"## {section}", "", "| key | default | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(parts)


# --- errors -------------------------------------------------------------------------------------


def user_error_types() -> Dict[str, type]:
    """Name -> class of every user-mistake type (``UserError`` and its subclasses) the package defines."""
    found = {"UserError": errors.UserError}
    definitions = [
        (path, node)
        for path in _modules()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read()))
        if isinstance(node, ast.ClassDef)
    ]
    grown = True
    while grown:  # a subclass may be defined before its base is known
        grown = False
        for path, node in definitions:
            bases = {getattr(base, "id", getattr(base, "attr", None)) for base in node.bases}
            if node.name not in found and bases & set(found):
                found[node.name] = getattr(_import(path), node.name)
                grown = True
    return found


def _modules() -> Iterator[str]:
    for folder, _, files in sorted(os.walk(PACKAGE_DIR)):
        for name in sorted(files):
            if name.endswith(".py") and name != "__main__.py":
                yield os.path.join(folder, name)


def _import(path: str):
    relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[: -len(".py")].replace(os.sep, ".")
    name = relative[: -len(".__init__")] if relative.endswith(".__init__") else relative
    return importlib.import_module(name)


def _render(node: ast.expr) -> str:
    """A message as the user reads it, with ``{...}`` where a value is filled in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_render(part) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _render(node.left) + _render(node.right)
    value = node.value if isinstance(node, ast.FormattedValue) else node
    # argument("threshold") becomes the flag or key the user wrote; shown by its Python name.
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "argument" and value.args:
        name = value.args[0]
        return f"<{name.value}>" if isinstance(name, ast.Constant) else "<{" + ast.unparse(name) + "}>"
    shown = "{" + ast.unparse(value) + "}"
    return f"'{shown}'" if isinstance(node, ast.FormattedValue) and node.conversion == ord("r") else shown


def error_sites() -> List[Tuple[str, str, str, str]]:
    """(exception type, ``module:line``, function, message) for every ``raise`` of a user-mistake type."""
    types = user_error_types()
    sites = []
    for path in _modules():
        tree = ast.parse(open(path, encoding="utf-8").read())
        where = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))
        for function in [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.Module))]:
            body = function.body if isinstance(function, ast.FunctionDef) else []
            for node in (n for statement in body for n in ast.walk(statement)):
                if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
                    continue
                name = getattr(node.exc.func, "id", None)
                if name not in types or not node.exc.args:
                    continue
                sites.append((name, f"{where}:{node.lineno}", function.name, _render(node.exc.args[0])))
    # A nested function's raise is found under each enclosing function; keep the innermost.
    innermost: Dict[str, Tuple[str, str, str, str]] = {}
    for site in sites:
        innermost[site[1]] = site
    return sorted(innermost.values(), key=lambda site: (site[0], site[1]))


def _code(text: str) -> str:
    """``text`` as an inline code span, whatever backticks it holds."""
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def errors_markdown() -> str:
    """The error reference: each type's docstring, then the sentence of each place that raises it."""
    by_type: Dict[str, List[Tuple[str, str, str, str]]] = defaultdict(list)
    for site in error_sites():
        by_type[site[0]].append(site)
    types = user_error_types()
    parts = []
    for name in sorted(by_type):
        # The built-in types it derives from, most specific first, less the ones every exception has.
        builtins = [
            base.__name__
            for base in types[name].__mro__[1:]
            if base.__module__ == "builtins" and base not in (Exception, BaseException, object)
        ]
        parts += [f"## {name}", "", inspect.getdoc(types[name]) or "", ""]
        if builtins:
            parts += [f"A Python caller can also catch it as {' or '.join(f'`{b}`' for b in builtins)}.", ""]
        parts += [
            f"- {_code(message)} <small>({where}, `{function}`)</small>"
            for _, where, function, message in by_type[name]
        ]
        parts.append("")
    return "\n".join(parts)


# --- API ----------------------------------------------------------------------------------------


def api_names() -> List[str]:
    """Dotted paths of everything the API page documents: the root's public names where they are defined."""
    paths = []
    for name in connectomics_mednext.__all__:
        if name.startswith("_"):
            continue
        value = getattr(connectomics_mednext, name)
        paths.append(f"{value.__module__}.{value.__qualname__}")
    return paths + list(EXTRA_API)


def api_markdown() -> str:
    """One mkdocstrings block per documented name."""
    return "\n\n".join(f"::: {path}" for path in api_names()) + "\n"


# --- figures ------------------------------------------------------------------------------------

RESULTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results")


def read_results(name: str) -> Dict:
    with open(os.path.join(RESULTS_DIR, name), encoding="utf-8") as handle:
        return json.load(handle)


def measured_on(command: str, *names: str) -> str:
    """The sentence under a figure: machine, software, date, commit, the command and its results files.

    Args:
        command: the command that measured it.
        names: its results files in ``benchmarks/results``.
    """
    first = read_results(names[0])["provenance"]
    files = " and ".join(f"`benchmarks/results/{name}`" for name in names)
    return (
        f"Measured on {first['machine']} (Python {first['python']}, torch {first['torch']}), {first['date']}, "
        f"at commit `{first['commit'][:10]}`, by `{command}`, which wrote {files}."
    )


def quickstart_figures() -> str:
    record = read_results("quickstart_cpu.json")
    seconds = record["seconds"]
    return (
        f"The three commands took {record['total_s'] / 60:.1f} minutes together: {seconds['synthetic_data']:.0f} s to "
        f"write the volumes, {seconds['train'] / 60:.1f} min to train and {seconds['infer']:.0f} s to predict. "
        f"Validation Dice on the held-out volume was {record['validation_dice']:.3f} (IoU "
        f"{record['validation_iou']:.3f}). "
        + measured_on("python benchmarks/bench_quickstart.py", "quickstart_cpu.json")
    )


def vs_monai_figures() -> str:
    record = read_results("vs_monai_cpu_s_k3.json")
    rows = ["| what | ours | MONAI | ours / MONAI |", "|---|---|---|---|"]
    for row in record["rows"]:
        ours, theirs = row["ours"], row["monai"]
        name = f"MedNeXt-{row['model']} k{row['kernel']}, {record['config']['patch']}^3"
        for what, a, b, unit in (
            ("training step", ours["train_step"]["median_s"], theirs["train_step"]["median_s"], "s"),
            ("peak memory of training", ours["train_peak_memory_mib"], theirs["train_peak_memory_mib"], "MiB"),
            ("inference of one window", ours["window"]["median_s"], theirs["window"]["median_s"], "s"),
        ):
            shown = (f"{a:.3f} s", f"{b:.3f} s") if unit == "s" else (f"{a:.0f} MiB", f"{b:.0f} MiB")
            rows.append(f"| {name}: {what} | {shown[0]} | {shown[1]} | **{a / b:.2f}** |")
    threads = record["config"]["threads"]
    return "\n".join(rows) + (
        f"\n\nMedians of interleaved runs, {threads} threads, fp32, the same weights (outputs agree within "
        f"{max(r['max_abs_difference'] for r in record['rows']):.0e}). "
        + measured_on(
            "python benchmarks/bench_vs_monai.py --models S --kernels 3 --volume 0 --json "
            "benchmarks/results/vs_monai_cpu_s_k3.json",
            "vs_monai_cpu_s_k3.json",
        )
    )


def blockwise_memory_figures() -> str:
    record = read_results("blockwise_memory_cpu.json")
    rows = record["rows"]
    sizes = sorted({row["mvox"] for row in rows})
    modes = list(dict.fromkeys(row["mode"] for row in rows))
    largest = sizes[-1]
    lines = [
        "| mode | peak RSS per worker, " + " / ".join(f"{s:.0f}" for s in sizes) + " Mvox (1 worker) "
        f"| Mvox/s at {largest:.0f} Mvox, 1 / 2 workers | whole-volume decoder: Mvox/s, peak |",
        "|---|---|---|---|",
    ]
    for mode in modes:
        of = [row for row in rows if row["mode"] == mode]
        peaks = " / ".join(
            f"{row['worker_peak_mib']:.0f}" for s in sizes for row in of if row["mvox"] == s and row["workers"] == 1
        )
        speed = " / ".join(
            f"{row['mvox_per_s']:.1f}" for w in (1, 2) for row in of if row["mvox"] == largest and row["workers"] == w
        )
        whole = [row for row in of if row["workers"] == "whole volume"]
        last = whole[-1] if whole else None
        whole_text = (
            f"{last['mvox_per_s']:.1f} at {last['mvox']:.0f} Mvox, {last['scheduler_peak_mib']:.0f} MiB" if last else ""
        )
        lines.append(f"| `{mode}` | {peaks} MiB | {speed} | {whole_text} |")
    scheduler = max(row["scheduler_peak_mib"] for row in rows if row["workers"] != "whole volume")
    block = " x ".join(str(b) for b in record["block_size"])
    return "\n".join(lines) + (
        f"\n\nBlocks of {block}; synthetic cell predictions tiled to each size. The scheduler, which also runs the "
        f"graph step, peaked at {scheduler:.0f} MiB. "
        + measured_on(
            "python benchmarks/bench_blockwise.py memory --out benchmarks/results/blockwise_memory_cpu.json",
            "blockwise_memory_cpu.json",
        )
    )


def blockwise_quality_figures() -> str:
    record = read_results("blockwise_quality.json")
    lines = [
        "| volume | whole volume: VOI split, merge, adapted Rand | blockwise: the same "
        "| blockwise vs whole: VOI split, merge |",
        "|---|---|---|---|",
    ]
    for name, case in record["cases"].items():
        whole, blocks, versus = case["whole_vs_truth"], case["blockwise_vs_truth"], case["blockwise_vs_whole"]
        lines.append(
            f"| {name} | {whole['voi_split']:.2f}, {whole['voi_merge']:.2f}, {whole['arand']:.3f} "
            f"| {blocks['voi_split']:.2f}, {blocks['voi_merge']:.2f}, {blocks['arand']:.3f} "
            f"| {versus['voi_split']:.2f}, {versus['voi_merge']:.2f} |"
        )
    case = next(iter(record["cases"].values()))
    block = " x ".join(str(b) for b in case["block_size"])
    return "\n".join(lines) + (
        f"\n\n`boundary` mode with its defaults (FIB-25 at `--resolution 10`), blocks of {block}, on the predictions "
        f"of the quality benchmark below. "
        + measured_on("python benchmarks/bench_blockwise.py quality --gala ... --fib25 ...", "blockwise_quality.json")
    )


QUALITY_KEYS = ("dice", "precision", "recall", "f1", "ap50", "voi_split", "voi_merge", "arand")


def quality_figures() -> str:
    parts = []
    for name in ("quality_gala_mini.json", "quality_fib25.json"):
        record = read_results(name)
        budget = record["budget"]
        parts += [
            f"**{record['task']}**: {budget['iterations']} iterations, batch {budget['batch']}, crops "
            f"{'x'.join(map(str, budget['patch']))}, MedNeXt at {budget['channels']} channels, decoded by "
            f"`{record['decoder']}`.",
            "",
            "| | " + " | ".join(QUALITY_KEYS) + " | train | infer |",
            "|---" * (len(QUALITY_KEYS) + 3) + "|",
        ]
        rows = {**record["models"], **record["baselines"]}
        for row_name, values in rows.items():
            if "skipped" in values:
                parts.append(f"| {row_name} | skipped: {values['skipped']} |" + " |" * (len(QUALITY_KEYS) + 1))
                continue
            cells = [f"{values[k]:.3f}" if k in values else "" for k in QUALITY_KEYS]
            timing = [f"{values['train_s'] / 60:.1f} min" if "train_s" in values else ""]
            timing.append(f"{values['infer_s']:.0f} s" if "infer_s" in values else "")
            parts.append(f"| {row_name} | " + " | ".join(cells + timing) + " |")
        parts += ["", measured_on("python benchmarks/bench_quality.py", name), ""]
    return "\n".join(parts)


FIGURES = {
    "quickstart": quickstart_figures,
    "vs-monai": vs_monai_figures,
    "blockwise-memory": blockwise_memory_figures,
    "blockwise-quality": blockwise_quality_figures,
    "quality": quality_figures,
}
# The results files behind each figure, for the test that they are no older than their code.
FIGURE_RESULTS = {
    "quickstart": ["quickstart_cpu.json"],
    "vs-monai": ["vs_monai_cpu_s_k3.json"],
    "blockwise-memory": ["blockwise_memory_cpu.json"],
    "blockwise-quality": ["blockwise_quality.json"],
    "quality": ["quality_gala_mini.json", "quality_fib25.json"],
}
GENERATORS = {
    "config-keys": config_keys_markdown,
    "errors": errors_markdown,
    "api": api_markdown,
    **{f"figures {name}": render for name, render in FIGURES.items()},
}


README_REGION = re.compile(r"(<!-- generated: (figures [\w-]+) -->\n)(.*?)(<!-- end of generated -->)", re.S)


def readme_with_figures(text: str) -> str:
    """The README's text with each generated region holding its figures as the results files give them.

    The README is read on GitHub and PyPI, where no hook runs, so its figures are written into it
    (``python docs/hooks.py``) and ``tests/test_docs.py`` checks that they are current.

    Args:
        text: the README as it is.
    """
    return README_REGION.sub(lambda match: match.group(1) + GENERATORS[match.group(2)]() + "\n" + match.group(4), text)


def on_page_markdown(markdown: str, **_) -> str:
    """MkDocs hook: replace each ``<!-- generated: NAME -->`` marker with its generated text."""
    for name, generate in GENERATORS.items():
        marker = f"<!-- generated: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown


if __name__ == "__main__":
    README = os.path.join(os.path.dirname(RESULTS_DIR), os.pardir, "README.md")
    with open(README, encoding="utf-8") as handle:
        current = handle.read()
    with open(README, "w", encoding="utf-8") as handle:
        handle.write(readme_with_figures(current))
