"""``make mutants``: mutation testing (mutmut) of the modules whose mistakes users see first.

Each group mutates one area and runs only the focused tests that cover it, in a throwaway copy
of the work tree (mutmut reads its settings from pyproject.toml, so each copy gets its own
``[tool.mutmut]``).  Prints killed/survived per group and the survivors' names; ``mutmut show
NAME`` inside the printed copy shows a survivor's diff.

    python scripts/mutants.py                 # every group
    python scripts/mutants.py cache-policy    # one group
    python scripts/mutants.py named           # only the survivors issue 15 named: each test must fail
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: group -> (the files mutated, the focused tests each mutant runs)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "pagination": (
        ["gateway/pagination/*"],
        ["tests/test_mutants_named.py", "tests/test_pagination_styles.py", "tests/test_cursor.py",
         "tests/test_observable_api.py", "tests/test_posthog_api.py", "tests/test_ndjson.py"],
    ),
    "mapping": (
        ["gateway/mapping.py"],
        ["tests/test_mutants_named.py", "tests/test_gateway.py", "tests/test_observable_api.py",
         "tests/test_posthog_api.py", "tests/test_hostile.py"],
    ),
    "cache-policy": (
        ["gateway/cache/policy.py"],
        ["tests/test_mutants_named.py", "tests/test_cache.py"],
    ),
}


#: tests left out of every group (node ids): a test that fails on the unmutated code stops the run
DESELECT: list[str] = []


#: the survivors issue 15 names: (file, code, the wrong change, -k of the test in tests/test_mutants_named.py
#: that must fail on it).  mutmut credits a mutant only to tests that called the function in its
#: stats run, and misses some (the fingerprint is computed on reload): ``named`` checks these directly.
NAMED = [
    ("gateway/pagination/offset.py", "        offset += len(items)\n        yield served(offset, items)\n    position.ended.add(\"\")", "        offset = len(items)\n        yield served(offset, items)\n    position.ended.add(\"\")", "offset_walk"),  # noqa: E501
    ("gateway/pagination/offset.py", "            offset += len(items)\n            handed += len(items)", "            offset = len(items)\n            handed += len(items)", "offset_walk"),  # noqa: E501
    ("gateway/pagination/before.py", "if k in exhausted and not buffers[k]:", "if k in exhausted or not buffers[k]:", "merged_streams"),  # noqa: E501
    ("gateway/pagination/before.py", "if k in exhausted and not buffers[k]:", "if k in exhausted and buffers[k]:", "merged_streams"),  # noqa: E501
    ("gateway/pagination/__init__.py", "if handed > pag.max_items:", "if handed >= pag.max_items:", "max_items"),
    ("gateway/mapping.py", "            out[spec.name] = [spec.default] if spec.fan_out and spec.default is not None else spec.default\n            continue", "            out[spec.name] = [spec.default] if spec.fan_out and spec.default is not None else spec.default\n            break", "optional_params"),  # noqa: E501
    ("gateway/mapping.py", "        if low in _FALSE:\n            return False", "        if low in _FALSE:\n            return True", "boolean_false"),  # noqa: E501
    ("gateway/mapping.py", "        return quote(text, safe=\"\") if segment else text", "        return text", "path_params"),  # noqa: E501
    ("gateway/cache/policy.py", "for part in (route_fingerprint, \"GET\", norm, client, credential, vary):", "for part in (\"GET\", norm, client, credential, vary):", "reloaded_mapping"),  # noqa: E501
    ("gateway/cache/policy.py", "return float(max(value, 0))", "return float(max(value, 1))", "max_age_zero"),
    ("gateway/cache/policy.py", "bound = limit if bound is None else min(bound, limit)", "bound = limit if bound is None else max(bound, limit)", "strictest_freshness"),  # noqa: E501
    ("gateway/cache/policy.py", "return (*(f\"t:{p}\" for p in _ancestors(path)), f\"s:{path}\", f\"r:{route}\")", "return (*(f\"t:{p}\" for p in _ancestors(path)), f\"s:{path}\")", "invalidates"),  # noqa: E501
]


def check_named() -> int:
    """Apply each named wrong change to a scratch copy; its test must fail.  Returns the survivors."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _copy_tree(work)
        survivors = 0
        for path, old, new, k in NAMED:
            f = work / path
            original = f.read_text()
            assert original.count(old) == 1, f"{path}: the code changed, update NAMED: {old!r}"
            f.write_text(original.replace(old, new))
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                     "tests/test_mutants_named.py", "-k", k],
                    cwd=work, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(work)},
                )
            finally:
                f.write_text(original)
            killed = done.returncode == 1
            survivors += not killed
            print(f"{'killed  ' if killed else 'SURVIVED'} {path}: {new.strip().splitlines()[0][:70]} ({k})")
        return survivors


def _copy_tree(work: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, work / rel)


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def run_group(name: str, keep: Path) -> dict[str, int]:
    mutate, tests = GROUPS[name]
    deselect = [arg for test in DESELECT for arg in ("--deselect", test)]
    work = keep / name
    if work.exists():
        shutil.rmtree(work)
    _copy_tree(work)
    pyproject = work / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", pyproject.read_text())
    pyproject.write_text(
        text
        + "\n[tool.mutmut]\n"
        + 'source_paths = ["gateway"]\n'
        + f"only_mutate = {_toml_list(mutate)}\n"
        + f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        + f"also_copy = {_toml_list(['routes.yaml', 'deploy', 'docs', 'mkdocs.yml', 'examples', 'scripts'])}\n"
        + f"pytest_add_cli_args = {_toml_list(['-q', '-p', 'no:cacheprovider', '-p', 'no:randomly', *deselect])}\n"
        + "use_git_change_detection = false\n"
    )
    subprocess.run([sys.executable, "-m", "mutmut", "run"], cwd=work, check=False)
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work,
                         capture_output=True, text=True).stdout
    counts: dict[str, int] = {}
    for line in out.splitlines():
        status = line.rpartition(":")[2].strip()
        if status:
            counts[status] = counts.get(status, 0) + 1
    (keep / f"{name}.results.txt").write_text(out)
    return counts


def main() -> int:
    if sys.argv[1:] == ["named"]:
        return 1 if check_named() else 0
    names = sys.argv[1:] or list(GROUPS)
    keep = Path(tempfile.gettempdir()) / "routegate-mutants"
    keep.mkdir(exist_ok=True)
    for name in names:
        counts = run_group(name, keep)
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        total = sum(counts.values()) - counts.get("not checked", 0)
        score = 100 * killed / total if total else 0.0
        print(f"{name}: {counts} score {score:.0f}% (work tree: {keep / name}, survivors in {name}.results.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
