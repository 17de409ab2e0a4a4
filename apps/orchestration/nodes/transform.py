"""`transform` nodes: build a new object from earlier outputs by dotted paths."""
from apps.orchestration.nodes.base import NodeContext, NodeError, NodeType, node_types

_MISSING = object()


def resolve_path(root: dict, path: str):
    """The value at ``path`` (``a.b.0.c``) inside ``root``, or _MISSING."""
    value = root
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


@node_types.register("transform")
class TransformNode(NodeType):
    name = "transform"
    options = frozenset({"mapping", "defaults"})

    def validate(self, config: dict) -> list[str]:
        messages = super().validate(config)
        mapping = config.get("mapping")
        if not isinstance(mapping, dict) or not mapping:
            return [*messages, "'mapping' must be a non-empty object of key -> dotted path"]
        for key, path in mapping.items():
            if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
                messages.append(f"mapping '{key}' must be a dotted path like 'node_id.field'")
        if "defaults" in config and not isinstance(config["defaults"], dict):
            messages.append("'defaults' must be an object")
        return messages

    def run(self, config: dict, ctx: NodeContext) -> dict:
        # Paths start with an earlier node's id, or with 'payload'.
        root = {node_id: entry["output"] for node_id, entry in ctx.results.items()}
        root.setdefault("payload", ctx.payload)
        defaults = config.get("defaults", {})
        output, missing = {}, []
        for key, path in config["mapping"].items():
            value = resolve_path(root, path)
            if value is _MISSING:
                if key in defaults:
                    value = defaults[key]
                else:
                    missing.append(path)
                    continue
            output[key] = value
        if missing:
            raise NodeError(f"Path not found: {', '.join(missing)}", output=output)
        return output

    def display_lines(self, output: dict) -> list[str]:
        return [f"Keys: {', '.join(output) or '(none)'}"]
