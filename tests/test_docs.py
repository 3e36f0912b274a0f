"""The documentation stays true to the repository: every relative link (and #anchor) in README.md,
docs/*.md and data/README.md resolves, the README lists every docs page, and every command line
the docs show for train.py, evaluate.py, recallseg-compare, recallseg-class-stats and recallseg-check-data composes
with Hydra against the project's configs.

Only files and Hydra are read: no training, no torch, a few seconds in all.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONFIG_DIR, REPO

PAGES = sorted([REPO / "README.md", REPO / "data" / "README.md", *(REPO / "docs").glob("*.md")])

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")

# Keys of configs/eval.yaml itself; every other key of an evaluate.py command line overrides the
# training config stored in the checkpoint, so it is checked against configs/train.yaml.
EVAL_OWN_KEYS = {"checkpoint", "output_dir", "evaluation", "inference", "predictions", "hydra"}
# Flags that Hydra apps accept before or between overrides; the value-taking ones drop their value.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
LAUNCHER_PLUGINS = {"joblib": "hydra_plugins.hydra_joblib_launcher", "submitit": "hydra_plugins.hydra_submitit_launcher"}


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# ---------------------------------------------------------------- reading markdown


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks, inline code removed."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield number, INLINE_CODE.sub("", line)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters of any script, digits and _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2, ... for repeated headings."""
    seen: dict[str, int] = {}
    result = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            result.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return result


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """'page:line: target (why)' for every relative link of ``page`` that does not resolve in ``root``."""
    problems = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http:, https:, mailto:, ... are not checked here
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.name}:{number}: {target}"
            if not resolved.exists():
                problems.append(f"{where} (no such file)")
            elif root not in resolved.parents and resolved != root:
                problems.append(f"{where} (outside the repository)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where} (no heading with that anchor in {resolved.relative_to(root).as_posix()})")
    return problems


# ---------------------------------------------------------------- command lines shown in the docs


@dataclass
class Command:
    where: str  # page:line
    text: str  # the command line as the docs show it
    files: dict[str, str]  # files the same page shows (a code block opening with "# <path>"), by path


def code_commands(text: str):
    """(line number, command) of fenced code blocks (continuation lines joined) and inline code."""
    fenced = False
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line
            pending = ""
        else:
            for _, span in INLINE_CODE.findall(line):
                yield number, span


def shown_files(text: str) -> dict[str, str]:
    """Files a page asks the reader to write: code blocks whose first line is '# <relative path>'."""
    files = {}
    for block in re.findall(r"^```\w*\n(.*?)^```", text, flags=re.M | re.S):
        first, _, rest = block.partition("\n")
        match = re.fullmatch(r"#\s*([\w./-]+\.(?:yaml|yml))\s*", first)
        if match:
            files[match.group(1)] = rest
    return files


def is_entry(token: str) -> str | None:
    """Which config an entry-point token composes: train, eval, class_stats, check_data, compare; or None."""
    name = token.rsplit("/", 1)[-1]
    if name in ("train.py", "recallseg-train"):
        return "train"
    if name in ("evaluate.py", "recallseg-eval"):
        return "eval"
    if name in ("class_stats.py", "recallseg-class-stats"):
        return "class_stats"
    if name in ("check_data.py", "recallseg-check-data"):
        return "check_data"
    if name in ("compare_losses.py", "recallseg-compare"):
        return "compare"
    return None


def all_commands() -> list[Command]:
    commands = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        files = shown_files(text)
        for number, line in code_commands(text):
            if any(args for _, args in split_command(Command("", line, {}))):  # not a bare mention of a command
                commands.append(Command(f"{rel(page)}:{number}", line.strip(), files))
    return commands


def starts_command(before: list[str]) -> bool:
    """Whether a token after ``before`` (the words of its shell command so far) is the program run:
    the first word after VAR=value assignments, python's script, or torchrun's script."""
    words = [word for word in before if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word)] if before else []
    return not words or words[-1] in ("python", "python3") or (words[0] == "torchrun" and all(w.startswith("-") for w in words[1:]))


def split_command(command: Command) -> list[tuple[str, list[str]]]:
    """(entry, arguments) for each recallseg command of a shell line (split at &&, ||, ;, |)."""
    if not any(is_entry(word) for word in re.split(r"[\s;&|]+", command.text)):
        return []
    try:
        tokens = shlex.split(command.text, comments=True)
    except ValueError as error:
        raise AssertionError(f"{command.where}: not a valid shell line ({error}): {command.text}") from None
    found, entry, args, before = [], None, [], []
    for token in [*tokens, ";"]:
        if token in ("&&", "||", ";", "|") or token.endswith(";"):
            if entry:
                found.append((entry, args))
            entry, args, before = None, [], []
        elif entry:
            args.append(token)
        else:
            entry = is_entry(token) if starts_command(before) else None
            before.append(token)
    return found


def hydra_overrides(entry: str, args: list[str], where: str) -> list[str]:
    """The Hydra overrides of an entry point's arguments: flags and placeholders (<...>) left out."""
    if entry == "compare":  # --losses a,b --launcher x -- overrides
        overrides, rest = [], list(args)
        if "--" in rest:
            overrides, rest = rest[rest.index("--") + 1 :], rest[: rest.index("--")]
        options = dict(zip(rest[::2], rest[1::2]))
        losses = options.get("--losses", "ce,weighted_ce,recall")
        launcher = [f"hydra/launcher={options['--launcher']}"] if options.get("--launcher", "...") != "..." else []
        return [f"loss={losses}", *launcher, *overrides]
    overrides, skip_next = [], False
    for token in args:
        if skip_next:
            skip_next = False
        elif token.startswith("-"):
            skip_next = token in FLAGS_WITH_VALUE
        elif ("<" in token or ">" in token or "..." in token) and not token.startswith("checkpoint="):
            continue  # a placeholder such as loss=<loss> or dataset.root=...
        elif "=" in token or token.startswith("~"):
            overrides.append(token)
        else:
            raise AssertionError(f"{where}: {token!r} is neither a flag nor a key=value override")
    return overrides


def compositions(command: Command, tmp_path: Path) -> list[tuple[str, list[str]]]:
    """(config name, overrides) to compose for a command: sweeps expanded one value at a time."""
    parser = OverridesParser.create()
    result = []
    for entry, args in split_command(command):
        tokens = hydra_overrides(entry, args, command.where)
        if any("$PWD" in token for token in tokens):  # the page's own files, written where $PWD points
            for path, content in command.files.items():
                (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / path).write_text(content)
            tokens = [token.replace("$PWD", str(tmp_path)) for token in tokens]
        for kind, module in LAUNCHER_PLUGINS.items():
            if any(token.startswith(f"hydra/launcher={kind}") for token in tokens) and importlib.util.find_spec(module) is None:
                tokens = [t for t in tokens if not t.startswith(("hydra/launcher=", "hydra.launcher."))]
        by_config: dict[str, list] = {}
        for token in tokens:
            override = parser.parse_overrides([token])[0]
            key = override.get_key_element().lstrip("+~")
            config = {"compare": "train"}.get(entry, entry)
            if entry == "eval" and re.split(r"[./]", key)[0] not in EVAL_OWN_KEYS:
                config = "stored"  # a key of the checkpoint's stored training config
            if key == "checkpoint":
                token = "checkpoint=any.pt"  # any path: evaluate.py reads it, Hydra does not
                override = parser.parse_overrides([token])[0]
            by_config.setdefault(config, []).append(override)
        if entry == "eval":
            by_config.setdefault("eval", [])
        for config, overrides in by_config.items():
            result.extend((config, variant) for variant in sweep_variants(overrides))
    return result


def sweep_variants(overrides) -> list[list[str]]:
    """One override list per value of each sweep (the other sweeps at their first value)."""
    def text(override, value=None):
        if value is None:
            return override.input_line
        return f"{override.get_key_element()}={value}"

    sweeps = [(i, list(o.sweep_string_iterator())) for i, o in enumerate(overrides) if o.is_sweep_override()]
    first = [text(o, dict(sweeps).get(i, [None])[0]) for i, o in enumerate(overrides)]
    variants = [first]
    for index, values in sweeps:
        for value in values[1:]:
            variant = list(first)
            variant[index] = text(overrides[index], value)
            variants.append(variant)
    return variants


_composed: dict[tuple[str, tuple[str, ...]], str | None] = {}  # the docs repeat commands: compose each once


def composition_error(config: str, overrides: list[str]) -> str | None:
    """Why ``config`` with ``overrides`` does not compose (None when it does)."""
    key = (config, tuple(overrides))
    if key not in _composed:
        try:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
                compose(config, overrides=overrides, return_hydra_config=True)
            _composed[key] = None
        except Exception as error:  # Hydra's composition and override-parsing errors
            _composed[key] = f"{type(error).__name__}: {error}"
    return _composed[key]


def stored_config_error(overrides: list[str]) -> str | None:
    """Overrides evaluate.py applies to a checkpoint's stored training config: they must compose
    with the training config for some choice of the groups they touch without selecting (a
    checkpoint trained on Cityscapes has dataset.root, one trained on `synthetic` does not)."""
    error = composition_error("train", overrides)
    if error is None:
        return None
    selected = {o.split("=", 1)[0] for o in overrides if re.fullmatch(r"[\w/]+=.*", o) and (CONFIG_DIR / o.split("=", 1)[0]).is_dir()}
    touched = {re.split(r"[./=]", o.lstrip("+~"))[0] for o in overrides} - selected
    for group in sorted(touched):
        if (CONFIG_DIR / group).is_dir():
            for choice in sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml")):
                if composition_error("train", [f"{group}={choice}", *overrides]) is None:
                    return None
    return error


def compose_all(pairs: list[tuple[str, list[str]]]) -> None:
    """Raise an AssertionError naming the first (config, overrides) that does not compose."""
    for config, overrides in pairs:
        error = stored_config_error(overrides) if config == "stored" else composition_error(config, overrides)
        if error:
            name = "the training config a checkpoint stores" if config == "stored" else f"configs/{config}.yaml"
            raise AssertionError(f"{name} with {overrides}: {error}")


COMMANDS = all_commands()


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    assert not broken_links(page), "broken links:\n" + "\n".join(broken_links(page))


def test_readme_lists_every_docs_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {target.partition("#")[0] for _, line in prose_lines(readme) for target in LINK.findall(line)}
    missing = [rel(page) for page in (REPO / "docs").glob("*.md") if rel(page) not in linked]
    assert not missing, f"README.md's table of contents does not link {missing} (a plain `docs/...` name there becomes a link once the page exists)"
    assert "docs/architecture.md" in readme


def test_commands_are_found():
    """The docs show the everyday commands; if this count drops to nothing the parsing broke."""
    entries = {entry for command in COMMANDS for entry, _ in split_command(command)}
    assert {"train", "eval", "compare", "class_stats", "check_data"} <= entries
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.where)
def test_command_composes(command, tmp_path):
    pairs = compositions(command, tmp_path)
    try:
        compose_all(pairs)
    except AssertionError as error:
        raise AssertionError(f"{command.where}: `{command.text}` does not compose: {error}") from None


def test_the_checks_catch_mistakes(tmp_path):
    """Each check fails on a wrong link, a wrong anchor or a wrong key."""
    (tmp_path / "page.md").write_text("# A heading (`x=1`)\n\n[ok](#a-heading-x1) [bad](#nope) [gone](missing.md) `[code](x.md)`\n")
    problems = broken_links(tmp_path / "page.md", root=tmp_path)
    assert len(problems) == 2 and "nope" in problems[0] and "missing.md" in problems[1], problems
    assert github_slug("Fused loss kernels (`loss.kernel=triton`)") == "fused-loss-kernels-losskerneltriton"
    assert github_slug("Sweeps: in parallel on one machine, or on SLURM") == "sweeps-in-parallel-on-one-machine-or-on-slurm"
    for text in ("python train.py trainer.max_iter=3", "python train.py loss=nope", "python evaluate.py checkpoint=x dataset.rot=/d"):
        with pytest.raises(AssertionError):
            compose_all(compositions(Command("test", text, {}), tmp_path))
    compose_all(compositions(Command("test", "python evaluate.py checkpoint=x dataset.root=/d inference.flip=true", {}), tmp_path))
