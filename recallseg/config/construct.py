"""Building every configurable part from its config section: one mechanism, ``_target_``.

A section names a class (or factory function) in ``_target_``; its other keys are keyword
arguments, and the caller adds what only the program knows (the number of classes, the
parameters to optimise). ``build`` is ``hydra.utils.instantiate`` with two additions:

- a section can be *untrusted* (a config stored in a checkpoint someone else wrote). Then every
  ``_target_`` in it, nested ones included, must be one of recallseg's own classes, a
  segmentation-models-pytorch model, an albumentations transform or (an optimizer section) a
  ``torch.optim`` optimizer, and is checked as text *before* anything is imported. Anything
  else is refused; the user may name it on the command line for this run, which makes it
  theirs. Hydra's other keys (``_partial_``, ``_args_``, ...) are refused, and the checked tree
  is called as it is (``call_tree``): never resolved by OmegaConf, so what was checked is what
  the constructors get.
- mistakes (an unknown target, an option the target does not take, a value the ``Option`` a
  class declares for it refuses) become one-line ``ConfigError``s naming the key.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from recallseg.config.finite import refuse_non_finite
from recallseg.config.schema import Option, check_value
from recallseg.errors import ConfigError, UserError, nearest

PACKAGE = Path(__file__).resolve().parents[1]  # recallseg/
# What a stored config may name, by package; each must also be of the kind the section builds
# (torch.optim: an optimizer only, for a resumed run's optimizer section).
TRUSTED_PACKAGES = ("recallseg", "segmentation_models_pytorch", "albumentations", "torch.optim")


def _in_trusted_package(dotted: str) -> bool:
    return any(dotted == package or dotted.startswith(package + ".") for package in TRUSTED_PACKAGES)


@dataclass(frozen=True)
class Trust:
    """Whose config the parts are built from: the user's (``trusted``), or one stored in a checkpoint,
    of which only the targets in ``named_by_user`` (named on the command line) are the user's."""

    trusted: bool = True
    named_by_user: frozenset[str] = frozenset()

    @classmethod
    def of(cls, named_by_user: frozenset[str] | None) -> "Trust":
        """The user's config for None; a stored one with the user's ``named_by_user`` otherwise."""
        return cls() if named_by_user is None else cls(False, frozenset(named_by_user))

    @property
    def build(self) -> dict[str, Any]:
        """The keyword arguments of ``build`` (and of the builders that pass them on)."""
        return {"trusted": self.trusted, "named_by_user": self.named_by_user}


def resolved(node: Any) -> Any:
    """A DictConfig/ListConfig as plain Python data with its interpolations resolved; anything else unchanged."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def targets(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every ``(key, _target_)`` in ``node``, nested ones included (``key`` as dotted path)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{where}.{key}"
            if key == "_target_":
                yield path, value
            else:
                yield from targets(value, path)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from targets(value, f"{where}[{index}]")


def check_untrusted_text(node: Any, where: str, named_by_user: set[str] = frozenset()) -> None:
    """Refuse, before importing anything, a stored section whose targets leave the trusted packages.

    ``named_by_user`` holds the targets the user gave on the command line for this run.
    """
    for key, target in targets(node, where):
        if target in named_by_user:
            continue
        parts = str(target).split(".") if isinstance(target, str) else []
        if len(parts) < 2 or not _in_trusted_package(target) or any(not p.isidentifier() or p.startswith("_") for p in parts):
            raise ConfigError(
                key,
                f"the stored config names {target!r}, which is not part of recallseg, segmentation-models-pytorch, "
                "albumentations or torch.optim, and recallseg never imports or calls what a checkpoint names",
                f"if you trust it, name it yourself for this run: {key.replace('[', '.').replace(']', '')}={target}"
                if "[" not in key else "give the section on the command line for this run",
            )


def raised_in_recallseg(error: BaseException) -> bool:
    """Whether ``error`` was raised by recallseg's own code (its innermost frame is in the package).

    recallseg reports a user's mistake as a ``UserError`` where it finds it; any other error from
    its own code is a bug, which must keep its traceback rather than become "fix your config"."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


def check_no_call_keys(node: Any, where: str) -> None:
    """Refuse Hydra's keys other than ``_target_`` (``_partial_``, ``_args_``, ``_convert_``,
    ``_recursive_``) in a stored section: they change what is called, or how."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("_") and key.endswith("_") and key != "_target_":
                raise ConfigError(
                    f"{where}.{key}", "the stored config uses a Hydra key that changes what is called, which recallseg never stores",
                    "use a checkpoint written by recallseg train",
                )
            check_no_call_keys(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            check_no_call_keys(value, f"{where}[{index}]")


def call_tree(node: Any, where: str, supplied: Mapping[str, Any] = {}) -> Any:
    """Build a checked stored section as written: nested ``_target_`` mappings are built first,
    lists and mappings stay plain, and nothing is resolved or looked up beyond the targets."""
    if isinstance(node, Mapping):
        options = {key: call_tree(value, f"{where}.{key}") for key, value in node.items() if key != "_target_"}
        if "_target_" not in node:
            return options
        return locate(node["_target_"], f"{where}._target_")(**options, **supplied)
    if isinstance(node, (list, tuple)):
        return [call_tree(value, f"{where}[{index}]") for index, value in enumerate(node)]
    return node


def locate(target: Any, key: str) -> Any:
    """Import the object a ``_target_`` names (``package.module.Name``), or a ConfigError."""
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(key, f"must name a class as package.module.Name, got {target!r}")
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name or module_name.startswith(f"{error.name}."):
                continue  # that prefix is not a module: try a shorter one
            raise ConfigError(key, f"{target!r} needs the missing package {error.name!r}", f"install {error.name}") from None
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                hint = nearest(attribute, [n for n in dir(obj) if not n.startswith("_")])
                raise ConfigError(
                    key, f"{'.'.join(parts[:cut])!r} has no {attribute!r}", f"did you mean {hint!r}?" if hint else "check the name"
                )
            obj = getattr(obj, attribute)
        return obj
    raise ConfigError(key, f"cannot import {target!r}: there is no module {parts[0]!r}", "check the spelling, or install the package")


def transform_kinds() -> tuple[type, ...]:
    """What a nested untrusted target may be: an albumentations transform (recallseg's own subclass them)."""
    import albumentations as A

    return (A.BasicTransform, A.BaseCompose)


def check_trusted_object(obj: Any, target: str, key: str, kind: type | tuple[type, ...] | None) -> None:
    """After import: an untrusted target must be defined in a trusted package and be of ``kind``
    (a class; model factory functions of smp and recallseg.models are the one exception)."""
    module = getattr(obj, "__module__", "") or ""
    inside = _in_trusted_package(module)
    fits = (inspect.isclass(obj) and kind is not None and issubclass(obj, kind)) or (
        inspect.isfunction(obj) and inside and _is_factory(obj) and _admits_models(kind)
    )
    if not inside or not fits:
        raise ConfigError(
            key, f"the stored config names {target!r}, which is not a {_kind_name(kind)} of recallseg or its libraries",
            "name it yourself on the command line for this run if you trust it",
        )


def _is_factory(function: Callable) -> bool:
    """Functions that build models (``smp.create_model``, recallseg.models builders) are allowed as model targets."""
    return function.__module__.startswith(("segmentation_models_pytorch", "recallseg.models"))


def _admits_models(kind: Any) -> bool:
    """Whether a section of ``kind`` builds a model (only there may a model factory stand in for a class)."""
    from torch import nn

    return kind is None or any(isinstance(k, type) and issubclass(nn.Module, k) for k in (kind if isinstance(kind, tuple) else (kind,)))


def _kind_name(kind: Any) -> str:
    if kind is None:
        return "component"
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def accepted_options(obj: Any) -> tuple[set[str], bool]:
    """The keyword names a class or function takes, and whether it takes ``**kwargs``."""
    function = obj.__init__ if inspect.isclass(obj) else obj
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return set(), True
    names = {name for name, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"}
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def check_options(
    obj: Any, options: Mapping[str, Any], key: str, target: str, supplied: set[str] = frozenset(),
    specs: Mapping[str, Option] | None = None,
) -> None:
    """Refuse options the target does not take (and those the program supplies itself).

    ``specs`` (name -> ``Option``), where the target declares them, are the options it takes and
    what each value may be; without them the names come from its signature and any value goes.
    """
    names, takes_any = (set(specs), False) if specs is not None else accepted_options(obj)
    for option, value in options.items():
        if option.startswith("_") and option.endswith("_"):
            continue
        if option in supplied:
            raise ConfigError(f"{key}.{option}", f"is set by recallseg itself for {target}", f"remove {key}.{option} from the config")
        if not takes_any and option not in names:
            hint = nearest(option, names - set(supplied))
            raise ConfigError(
                f"{key}.{option}", f"{target} takes no option {option!r}",
                f"did you mean {key}.{hint}?" if hint else f"its options are: {', '.join(sorted(names - set(supplied))) or 'none'}",
            )
        if specs is not None:
            check_value(f"{key}.{option}", value, specs[option], options)
        refuse_non_finite(value, f"{key}.{option}")  # without a spec, or where one lets a number through unread
    missing = [name for name, spec in (specs or {}).items() if spec.required and name not in options]
    if missing:
        raise ConfigError(f"{key}.{missing[0]}", f"is missing; {target} has no default for it", f"add {key}.{missing[0]}=<value>")


def check_untrusted_section(section: Any, key: str, named_by_user: set[str], kind_at: Callable[[str], Any]) -> None:
    """A stored section's targets: checked as text before anything is imported, then each one
    (but those the user named) imported and held to the kind ``kind_at(its key)`` asks for."""
    check_untrusted_text(section, key, named_by_user)
    for path, target in targets(section, key):
        if target not in named_by_user:
            check_trusted_object(locate(target, path), target, path, kind_at(path))


def build(
    section: Any, key: str, *, kind: type | tuple[type, ...] | None = None, trusted: bool = True,
    named_by_user: set[str] = frozenset(), **supplied: Any,
) -> Any:
    """Instantiate ``section`` (``{_target_: ..., **options}``) with the ``supplied`` keyword arguments.

    ``kind`` is what the result must be (checked for untrusted sections; ``None``: anything).
    Nested sections with their own ``_target_`` are built too (albumentations' ``OneOf``).
    """
    # A stored section is never resolved (an interpolation in it stays text); the user's is, once.
    section = resolved(section) if trusted else OmegaConf.to_container(section, resolve=False) if isinstance(section, DictConfig) else section
    if not isinstance(section, Mapping) or "_target_" not in section:
        raise ConfigError(key, f"must be a mapping with a _target_ naming what to build, got {section!r}")
    if not trusted:  # checked as it will be called: this tree is what the constructors get
        check_no_call_keys(section, key)
        # ``kind`` applies to the section itself; nested targets must be transforms
        check_untrusted_section(section, key, named_by_user, lambda path: kind if path == f"{key}._target_" else transform_kinds())
    obj = locate(section["_target_"], f"{key}._target_")
    options = {k: v for k, v in section.items() if k != "_target_"}
    check_options(obj, options, key, section["_target_"], set(supplied))
    try:
        if not trusted:
            return call_tree(section, key, supplied)
        return instantiate({**section, **{"_convert_": "all"}}, **supplied)
    except Exception as error:
        cause = error.__cause__ or error  # Hydra wraps what the constructor raised
        if isinstance(cause, UserError):  # recallseg's own one-line message (a bad value, a missing download)
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)) and not raised_in_recallseg(cause):
            # another library's constructor refusing the user's value (smp, albumentations, torch.optim)
            raise ConfigError(key, f"{section['_target_']}: {cause}", "fix the options in that section") from None
        raise cause from None  # anything else, and any error of recallseg's own code, is a bug: with its own traceback
