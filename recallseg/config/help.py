"""``--help`` of the Hydra commands (train, evaluate, class_stats), rendered from the config files.

The help lists the config groups with their choices, then every option of the primary config and
of the chosen group files as ``key=default`` with the comment the file gives it (the comment
lines above a key, or the one after it), plus the allowed values the schema knows. Nothing is
written twice, so the help cannot drift from the files. Hydra shows it through the help template
``configs/hydra/help/recallseg.yaml``, whose ``${recallseg_help:...}`` resolver ``config/compose.py``
registers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w.@-]*)\s*:(?:\s+|$)(?P<rest>.*)$")
WIDTH = 31  # "key=value" column
USAGE = {
    "train": "python train.py [group=option ...] [key=value ...]        (installed: recallseg-train)",
    "eval": "python evaluate.py checkpoint=PATH [key=value ...]         (installed: recallseg-eval)",
    "class_stats": "python scripts/class_stats.py [dataset=NAME] [key=value ...]   (installed: recallseg-class-stats)",
    "check_data": "python scripts/check_data.py [dataset=NAME] [key=value ...]    (installed: recallseg-check-data)",
}
SKIPPED_TOP = ("defaults", "hydra")


def _split_comment(rest: str) -> tuple[str, str]:
    """``value  # comment`` -> ``(value, comment)``; a ``#`` inside quotes is part of the value."""
    quote = None
    for i, char in enumerate(rest):
        if char in "'\"":
            quote = None if quote == char else (quote or char)
        elif char == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


def documented_options(text: str, prefix: str = "") -> tuple[str, list[tuple[str, str, str]]]:
    """``(header, [(dotted key, value as written, comment), ...])`` of one YAML config file.

    The header is the file's first comment line; ``defaults`` and ``hydra`` are left out; a
    mapping's key is listed with an empty value before its keys, a block list's key before its
    items, each as ``key.N`` (how an override names it) with the item as written."""
    lines = text.splitlines()
    header, i = "", 0
    while i < len(lines) and lines[i].lstrip().startswith("#"):
        line = lines[i].strip().lstrip("#").strip()
        if not header and line and not line.startswith("@package"):
            header = line
        i += 1
    options: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    pending: list[str] = []
    skipping: int | None = None  # indent of a skipped block
    items: dict[str, int] = {}  # a list's dotted key -> the number of its items seen
    item_indent: int | None = None  # indent of the last list item: deeper lines are its own
    for line in lines[i:]:
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        indent = len(line) - len(line.lstrip())
        if skipping is not None:
            if indent > skipping or stripped.startswith("-"):
                continue
            skipping = None
        if item_indent is not None and indent > item_indent:
            continue
        item_indent = None
        parent = ".".join([part for part in (prefix, *(k for _, k in stack)) if part])
        if stripped.startswith("- ") and stack and (parent in items or options[-1] == (parent, "", options[-1][2])):
            # an item of a block list: ``key.N=item`` as an override names it (dataset.train_transform.0.scale=...)
            value, comment = _split_comment(stripped[2:])
            items[parent] = items.get(parent, -1) + 1
            options.append((f"{parent}.{items[parent]}", value, " ".join(pending + ([comment] if comment else []))))
            pending, item_indent = [], indent
            continue
        if match is None:  # a continuation
            pending = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match.group("key")
        if not stack and key in SKIPPED_TOP:
            skipping, pending = indent, []
            continue
        value, comment = _split_comment(match.group("rest"))
        dotted = ".".join([part for part in (prefix, *(k for _, k in stack), key) if part])
        options.append((dotted, value, " ".join(pending + ([comment] if comment else []))))
        pending = []
        if value == "":
            stack.append((indent, key))
    return header, options


def _package_prefix(text: str, group: str) -> str:
    match = re.search(r"^#\s*@package\s+(\S+)", text, re.MULTILINE)
    if match:
        return "" if match.group(1) == "_global_" else match.group(1)
    return group.replace("/", ".")


def _schema_choices(key: str) -> str:
    """``a | b | c`` for a key whose allowed values the schema lists."""
    from recallseg.config import schema

    node: Any = {**schema.TRAIN, **schema.EVAL}
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
        if part in schema.RESERVED and node == "target":
            node = schema.RESERVED[part]
    if isinstance(node, schema.Option) and node.choices:
        return " | ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in node.choices)
    return ""


def _line(key: str, value: str, comment: str) -> str:
    choices = _schema_choices(key)
    if choices and choices not in comment:
        comment = f"{comment} ({choices})" if comment else choices
    pair = f"{key}={value}"
    return f"  {pair:<{WIDTH}} {comment}".rstrip()


def _groups_of(config_dirs: list[Path]) -> dict[str, list[str]]:
    groups: dict[str, set[str]] = {}
    for root in config_dirs:
        for path in root.glob("*/*.yaml"):
            if path.parent.name != "hydra":
                groups.setdefault(path.parent.name, set()).add(path.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


def _find(config_dirs: list[Path], relative: str) -> Path | None:
    return next((root / relative for root in config_dirs if (root / relative).is_file()), None)


def options_help(config_dir: str | Path | list, config_name: str, choices: Mapping[str, Any]) -> str:
    """The groups and options of ``config_name`` with the groups chosen as ``choices`` (``hydra.runtime.choices``)."""
    dirs = [Path(d) for d in (config_dir if isinstance(config_dir, list) else [config_dir])]
    chosen = {str(group): choice for group, choice in choices.items() if not str(group).startswith("hydra")}
    available = _groups_of(dirs)
    primary = _find(dirs, f"{config_name}.yaml")
    order = primary.read_text() if primary is not None else ""
    chosen = dict(sorted(chosen.items(), key=lambda item: (order.find(f"- {item[0]}:") % (len(order) + 1), item[0])))
    lines = [f"usage: {USAGE.get(config_name, config_name)}", "", "== Config groups (group=option) =="]
    for group in chosen:
        name, _, package = group.partition("@")  # loss_protocol@loss: a group placed under another key
        options = available.get(name.split("/")[0], [])
        now = chosen[group]
        if package:  # chosen by other groups (protocol and loss), never on its own; an optional file may not exist
            now = now if _find(dirs, f"{name}/{now}.yaml") is not None else None
            lines.append(f"  {name}: {', '.join(options)}   (follows protocol and loss; now: {now or 'none'})")
            continue
        lines.append(f"  {group}: {', '.join(options)}" + (f"   (now: {now})" if now is not None else "   (none chosen)"))
    lines += ["", "== Options (key=default  what it means); anything can be overridden as key=value =="]
    sections: list[tuple[str, list[tuple[str, str, str]]]] = []
    for group, choice in chosen.items():
        name, _, package = group.partition("@")
        path = None if choice is None else _find(dirs, f"{name}/{choice}.yaml")
        if path is None:
            continue
        text = path.read_text()
        header, options = documented_options(text, _package_prefix(text, package or group))
        sections.append((f"{name}/{choice}.yaml" + (f": {header}" if header else ""), options))
    if primary is not None:
        header, options = documented_options(primary.read_text())
        listed = {key: (n, j) for n, (_, opts) in enumerate(sections) for j, (key, _, _) in enumerate(opts)}
        own = []
        for key, value, comment in options:  # the primary config's own values win (its _self_ comes last)
            if key in listed:
                n, j = listed[key]
                old_key, _, old_comment = sections[n][1][j]
                sections[n][1][j] = (old_key, value, comment or old_comment)
            else:
                own.append((key, value, comment))
        sections.insert(0, (f"{config_name}.yaml" + (f": {header}" if header else ""), own))
    for title, options in sections:
        shown = [(k, v, c) for k, v, c in options if not k.endswith("_target_") and (v != "" or c)]
        if not shown:
            continue
        lines += ["", title]
        lines += [_line(key, value, comment) for key, value, comment in shown]
    lines += [
        "",
        "== Also ==",
        "  --cfg job          print the composed config instead of running",
        "  -m key=a,b         a sweep (hydra/launcher=joblib or submitit_slurm: see README)",
        "  --hydra-help       Hydra's own options",
    ]
    return "\n".join(lines)


def render_help(config_name: Any, choices: Any) -> str:
    """The OmegaConf resolver behind the help template; ``$`` is doubled for Hydra's string.Template."""
    from omegaconf import DictConfig, OmegaConf

    from recallseg.config.files import config_dir

    plain = OmegaConf.to_container(choices) if isinstance(choices, DictConfig) else dict(choices or {})
    return options_help([config_dir()], str(config_name), plain).replace("$", "$$")
