"""The docs site's reference pages, generated from the code at build time so that they cannot go stale.

mkdocs runs `on_files` (mkdocs.yml `hooks:`); each page is rendered from the object it documents:
the CLI from the argparse parser, the settings from service/settings.py's `Settings`, the errors from
service/api/errors.py's `ERROR_TABLE`, the bundle manifest from service/bundle.py's pydantic `Manifest`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # document the tree being built, not whatever is installed
    sys.path.insert(0, str(ROOT))

GENERATED = "<!-- generated from the code by scripts/docs_reference.py at build time; do not edit -->\n\n"


def cell(text: object) -> str:
    """One Markdown table cell: pipes and angle brackets escaped (`<name>` is not HTML), no line breaks."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def cli_parser() -> argparse.ArgumentParser:
    """`gru`'s whole parser: every subcommand's arguments (gru_cli builds only the chosen one's)."""
    import gru_cli

    parser = argparse.ArgumentParser(prog="gru", description=gru_cli.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text, _extra) in gru_cli.COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def option_default(action: argparse.Action) -> str:
    if action.required or action.default in (None, argparse.SUPPRESS) or isinstance(
            action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
        return ""
    return f"`{action.default}`"


def cli_page() -> str:
    import gru_cli

    out = ["# Command line: `gru`\n\n", GENERATED, f"{gru_cli.__doc__.strip()}\n\n",
           "Errors a user can fix are one `gru <command>: error: ...` line and exit code 2.\n\n"]
    for name, sub in subcommands(cli_parser()).items():
        usage = sub.format_usage().removeprefix("usage: ").replace("\n" + " " * len("usage: "), "\n").strip()
        out += [f"## gru {name}\n\n{sub.description}\n\n```text\n{usage}\n```\n\n",
                "| argument | default | meaning |\n|---|---|---|\n"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flags = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
            if action.choices and not isinstance(action.choices, dict):
                flags += " {" + ", ".join(map(str, action.choices)) + "}"
            required = " (required)" if action.required else ""
            out.append(f"| {cell(flags)}{required} | {cell(option_default(action))} | "
                       f"{cell(action.help or '')} |\n")
        out.append("\n")
    return "".join(out)


def type_name(annotation: Any) -> str:
    """A short readable type: `int`, `'cpu' | 'cuda'`, `list[str]`, `path | none`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation)).replace("PosixPath", "Path")


def field_default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
        return "(required)" if field.is_required() else "its fields' defaults"
    if field.default_factory is not None:
        return f"`{field.default_factory()}`"
    if field.default is PydanticUndefined:
        return "(required)"
    if field.default is None or field.default == "":
        return "(none)"
    return f"`{field.default}`"


def source_comments(cls: type) -> dict[str, str]:
    """Per field of a class body, its comment: `name: type = ...  # this`, or the `# lines` just above."""
    found, above = {}, []
    for line in inspect.getsource(cls).splitlines()[1:]:
        if (comment := re.match(r"\s+#\s*(.*)$", line)):
            above.append(comment[1])
        elif (field := re.match(r"\s+(\w+):[^#]*(?:#\s*(.+))?$", line)):
            found[field[1]] = field[2] or " ".join(above)
            above = []
        else:
            above = []
    return {name: comment.strip() for name, comment in found.items() if comment}


def settings_page() -> str:
    from service.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    out = ["# Settings\n\n", GENERATED,
           f"`gru serve` reads its settings from environment variables with the prefix `{prefix}` "
           "(pydantic-settings, `service/settings.py`); flags of `gru serve` override them "
           "([CLI](cli.md#gru-serve)). A value that does not validate stops start-up with one line "
           "naming the variable. What the settings do together: [Serving](../guides/serving.md).\n\n",
           "| variable | type | default | meaning |\n|---|---|---|---|\n"]
    comments = source_comments(Settings)
    for name, field in Settings.model_fields.items():
        secret = "SecretStr" in str(field.annotation)
        default = "(random per start)" if secret else field_default(field)
        kind = type_name(field.annotation).replace("SecretStr", "str")
        meaning = field.description or comments.get(name, "")
        out.append(f"| `{prefix}{name.upper()}` | {cell(kind)} | {cell(default)} | {cell(meaning)} |\n")
    return "".join(out)


def errors_page() -> str:
    from service.api import errors

    table = errors.ERROR_TABLE
    source = Path(inspect.getfile(type(next(iter(table.values()))))).relative_to(ROOT)  # where it is defined
    out = ["# Errors\n\n", GENERATED,
           f"Every error is JSON and has a code. One table (`{source}`) maps each code to its "
           "HTTP status on the native API and on the Open Inference Protocol routes (`/v2/...`), and to "
           "its gRPC status. The bodies:\n\n",
           "- native: `{\"error\": {\"code\", \"message\", \"field\", \"request_id\"}}`\n",
           "- v2: `{\"error\": \"<message>\", \"code\", \"field\", \"request_id\"}` "
           "(the protocol's form, the extras beside it)\n\n",
           "The same condition has the same code on every API; only \"the request is wrong\" differs in "
           "status (422 native, 400 v2, as Triton and its clients expect). `field` names what is wrong "
           "(`sequences[0]`, `inputs[1].name`, `parameters.sequence_id`, `content-type`, `headers`); "
           "`request_id` is the request's `X-Request-ID` (null when the transport refused the request "
           "before reading it). Over gRPC the message and code come with the gRPC status of the last "
           "column, and the code and field also in the trailing metadata (`gru-error-code`, "
           "`gru-error-field`).\n\n",
           "| code | native | v2 | gRPC | when |\n|---|---:|---:|---|---|\n"]
    for code, kind in table.items():
        out.append(f"| `{code}` | {kind.status} | {kind.v2_status} | {kind.grpc} | {cell(kind.meaning)} |\n")
    return "".join(out)


def pydantic_models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """`root` and every pydantic model its fields hold, depth first, each once."""
    found: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in found:
            return
        found.append(model)
        for field in model.model_fields.values():
            for arg in [field.annotation, *typing.get_args(field.annotation)]:
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    visit(arg)

    visit(root)
    return found


def graph_io_rows(module: types.ModuleType) -> str:
    """The graph's I/O names, declared once in service/bundle.py as `NAME = "x"  # meaning`."""
    found = re.findall(r'^[A-Z_]+ = "(\w+)"\s*#\s*(.+)$', inspect.getsource(module), re.MULTILINE)
    return "".join(f"| `{name}` | {cell(meaning)} |\n" for name, meaning in found
                   if name in (module.X_INPUT, module.LENGTHS_INPUT, module.STATE_INPUT, module.OUTPUT,
                               module.STATE_OUTPUT))


def type_link(annotation: Any, models: list[type[BaseModel]]) -> str:
    """The type, with a link to the section of a nested model."""
    text = type_name(annotation)
    for model in models:
        text = re.sub(rf"\b{model.__name__}\b", f"[{model.__name__}](#{model.__name__.lower()})", text)
    return text


def manifest_page() -> str:
    from service import bundle

    out = ["# Bundle manifest\n\n", GENERATED,
           f"`models/<name>/<version>/{bundle.MANIFEST_FILE}` beside `model.onnx`, schema version "
           f"{bundle.SCHEMA_VERSION} (`service/bundle.py`; `export/` writes it, the service reads it and "
           "refuses a bundle whose manifest and graph disagree, naming the field). Unknown fields are "
           "refused. What a bundle holds and how export verifies it: [Export](../guides/export.md).\n\n",
           "The graph's inputs and outputs (batch and time axes dynamic):\n\n",
           "| tensor | meaning |\n|---|---|\n", graph_io_rows(bundle), "\n"]
    models = pydantic_models(bundle.Manifest)
    for model in models:
        title = "manifest.json" if model is bundle.Manifest else f"{model.__name__}"
        doc = inspect.getdoc(model) if model.__doc__ else ""
        out.append(f"## {title}\n\n" + (f"{' '.join(doc.split())}\n\n" if doc else ""))
        out.append("| field | type | default | meaning |\n|---|---|---|---|\n")
        comments = source_comments(model)
        for name, field in model.model_fields.items():
            out.append(f"| `{name}` | {cell(type_link(field.annotation, models[1:]))} | "
                       f"{cell(field_default(field))} | "
                       f"{cell(field.description or comments.get(name, ''))} |\n")
        out.append("\n")
    return "".join(out)


PAGES: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli_page,
    "reference/settings.md": settings_page,
    "reference/errors.md": errors_page,
    "reference/manifest.md": manifest_page,
}


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated pages to the site (they exist only in the build)."""
    from mkdocs.structure.files import File

    for path, render in PAGES.items():
        files.append(File.generated(config, path, content=render()))
    return files
