"""Generate docs/api.md, the API reference, from the protos' own comments (``make docs-api``).

protoc (grpc_tools) compiles proto/ into a FileDescriptorSet with source info; this walks the
descriptors and renders every service, method, message, field and enum with its comment, plus
who may call each method through the gateway (gateway.policy).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "docs" / "api.md"
# Benchmark helpers are not part of the public API.
EXCLUDED = ("tutti/bench/",)

# Field numbers of the descriptor protos, for SourceCodeInfo paths.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE, SERVICE_METHOD = 2, 2

SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}


def compile_protos() -> descriptor_pb2.FileDescriptorSet:
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.pb"
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO}",
                f"-I{well_known}",
                "--include_source_info",
                "--include_imports",
                f"--descriptor_set_out={out}",
                *sources,
            ]
        )
        if code != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comment(comments: dict[tuple[int, ...], str], path: Iterable[int]) -> str:
    return comments.get(tuple(path), "")


def _cell(text: str) -> str:
    """A comment as one markdown table cell."""
    return " ".join(line.strip() for line in text.strip().splitlines()).replace("|", "\\|")


def _block(text: str) -> str:
    return "\n".join(line.strip() for line in text.strip().splitlines())


def _link(type_name: str, known: set[str]) -> str:
    name = type_name.lstrip(".")
    short = name.rsplit(".", 1)[-1]
    return f"[`{short}`](#{name})" if name in known else f"`{name}`"


class Renderer:
    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto], policies: object | None) -> None:
        self.files = files
        self.policies = policies
        self.known: set[str] = set()
        self.maps: dict[
            str, tuple[descriptor_pb2.FieldDescriptorProto, descriptor_pb2.FieldDescriptorProto]
        ] = {}
        for file in files:
            self._index(file.package, file.message_type, file.enum_type)

    def _index(
        self,
        prefix: str,
        messages: Iterable[descriptor_pb2.DescriptorProto],
        enums: Iterable[descriptor_pb2.EnumDescriptorProto],
    ) -> None:
        for enum in enums:
            self.known.add(f"{prefix}.{enum.name}")
        for message in messages:
            name = f"{prefix}.{message.name}"
            if message.options.map_entry:
                self.maps[name] = (message.field[0], message.field[1])
                continue
            self.known.add(name)
            self._index(name, message.nested_type, message.enum_type)

    def type_of(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type_name.lstrip(".") in self.maps:
            key, value = self.maps[field.type_name.lstrip(".")]
            return f"map<{self.type_of(key)}, {self.type_of(value)}>"
        if field.type in (field.TYPE_MESSAGE, field.TYPE_ENUM):
            base = _link(field.type_name, self.known)
        else:
            base = f"`{SCALARS[field.type]}`"
        if field.label == field.LABEL_REPEATED:
            return f"repeated {base}"
        return base

    def who(self, service: str, method: str) -> str:
        if self.policies is None:
            return ""
        rule = self.policies.rule_for(f"{service}/{method}")  # type: ignore[attr-defined]
        kinds = ["admin", *sorted(k.value for k in rule.kinds if k.value != "admin")]
        notes = []
        if rule.scope_channel:
            notes.append("own channel")
        if rule.scope_location:
            notes.append("own location")
        if rule.owner.value in ("response", "order"):
            notes.append("own orders")
        if rule.owner.value == "filter":
            notes.append("own orders listed")
        return ", ".join(kinds) + (f" ({'; '.join(notes)})" if notes else "")

    def render(self) -> str:
        by_package: dict[str, list[descriptor_pb2.FileDescriptorProto]] = defaultdict(list)
        for file in self.files:
            by_package[file.package].append(file)
        packages = sorted(by_package, key=lambda p: (not any(f.service for f in by_package[p]), p))
        lines = [
            "# Tutti API reference",
            "",
            "<!-- Generated by `make docs-api` (tools/gen_api_docs.py) from proto/. Do not edit. -->",
            "",
            "Every call goes through the gateway (default `127.0.0.1:50051`) with metadata",
            "`authorization: Bearer <api key>`; see [gateway.md](gateway.md) for credentials, rate limits",
            "and errors. *Who may call* lists the principal kinds the gateway lets through and how it",
            "scopes the call to the caller (own channel, own location, own orders).",
            "",
            "## Packages",
            "",
        ]
        for package in packages:
            services = [f"`{s.name}`" for f in by_package[package] for s in f.service]
            suffix = f" — services {', '.join(services)}" if services else ""
            lines.append(f"- [`{package}`](#package-{package.replace('.', '-')}){suffix}")
        for package in packages:
            lines += ["", f'<a id="package-{package.replace(".", "-")}"></a>', "", f"## Package `{package}`"]
            for file in sorted(by_package[package], key=lambda f: (not f.service, f.name)):
                lines += self.render_file(file)
        return "\n".join(lines).rstrip() + "\n"

    def render_file(self, file: descriptor_pb2.FileDescriptorProto) -> list[str]:
        comments = {
            tuple(loc.path): loc.leading_comments
            for loc in file.source_code_info.location
            if loc.leading_comments
        }
        lines = ["", f"### File `{file.name}`"]
        package_comment = next(
            (loc.leading_comments for loc in file.source_code_info.location if list(loc.path) == [2]), ""
        )
        if package_comment:
            lines += ["", _block(package_comment)]
        for s_index, service in enumerate(file.service):
            full = f"{file.package}.{service.name}"
            lines += ["", f'<a id="{full}"></a>', "", f"#### Service `{full}`", ""]
            if text := _comment(comments, (FILE_SERVICE, s_index)):
                lines += [_block(text), ""]
            lines += ["| Method | Request → Response | Who may call | Description |", "|---|---|---|---|"]
            for m_index, method in enumerate(service.method):
                request = ("stream " if method.client_streaming else "") + _link(
                    method.input_type, self.known
                )
                response = ("stream " if method.server_streaming else "") + _link(
                    method.output_type, self.known
                )
                description = _cell(_comment(comments, (FILE_SERVICE, s_index, SERVICE_METHOD, m_index)))
                who = self.who(full, method.name)
                lines.append(f"| `{method.name}` | {request} → {response} | {who} | {description} |")
        for e_index, enum in enumerate(file.enum_type):
            lines += self.render_enum(f"{file.package}.{enum.name}", enum, comments, (FILE_ENUM, e_index))
        for m_index, message in enumerate(file.message_type):
            lines += self.render_message(
                f"{file.package}.{message.name}", message, comments, (FILE_MESSAGE, m_index)
            )
        return lines

    def render_message(
        self,
        full: str,
        message: descriptor_pb2.DescriptorProto,
        comments: dict[tuple[int, ...], str],
        path: tuple[int, ...],
    ) -> list[str]:
        if message.options.map_entry:
            return []
        lines = ["", f'<a id="{full}"></a>', "", f"#### Message `{full.split('.', 3)[-1]}`", ""]
        if text := _comment(comments, path):
            lines += [_block(text), ""]
        if message.field:
            lines += ["| Field | Type | Description |", "|---|---|---|"]
            for f_index, field in enumerate(message.field):
                description = _cell(_comment(comments, (*path, MESSAGE_FIELD, f_index)))
                if field.HasField("oneof_index") and not field.proto3_optional:
                    description = f"*One of `{message.oneof_decl[field.oneof_index].name}`.* {description}"
                lines.append(f"| `{field.name}` | {self.type_of(field)} | {description} |")
        else:
            lines.append("*No fields.*")
        for e_index, enum in enumerate(message.enum_type):
            lines += self.render_enum(f"{full}.{enum.name}", enum, comments, (*path, MESSAGE_ENUM, e_index))
        for n_index, nested in enumerate(message.nested_type):
            lines += self.render_message(
                f"{full}.{nested.name}", nested, comments, (*path, MESSAGE_NESTED, n_index)
            )
        return lines

    @staticmethod
    def render_enum(
        full: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        comments: dict[tuple[int, ...], str],
        path: tuple[int, ...],
    ) -> list[str]:
        lines = ["", f'<a id="{full}"></a>', "", f"#### Enum `{full.split('.', 3)[-1]}`", ""]
        if text := _comment(comments, path):
            lines += [_block(text), ""]
        lines += ["| Value | Number | Description |", "|---|---|---|"]
        for v_index, value in enumerate(enum.value):
            description = _cell(_comment(comments, (*path, ENUM_VALUE, v_index)))
            lines.append(f"| `{value.name}` | {value.number} | {description} |")
        return lines


def render() -> str:
    descriptor_set = compile_protos()
    sources = {str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto")}
    files = [f for f in descriptor_set.file if f.name in sources and not f.name.startswith(EXCLUDED)]
    try:
        from gateway import policy
    except ImportError:  # the reference can be built without the gateway installed
        policy = None  # type: ignore[assignment]
    return Renderer(files, policy).render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools.gen_api_docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is not up to date")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output.relative_to(ROOT)} is stale: run `make docs-api`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
