"""Reading YAML safely (configs, sweeps, a run's config.yaml): a regular UTF-8 file of bounded
size, bounded nesting and a bounded size once aliases are expanded; every refusal is one
ICLError line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from icl.errors import ICLError

MAX_YAML_BYTES = 1 << 20  # configs and sweeps are a few KiB; the cap bounds what a stray file can cost
MAX_YAML_DEPTH = 32  # the deepest shipped value (a convex combination's part parameter) is 8 levels down
MAX_YAML_VALUES = 100_000  # the largest shipped file has a few hundred; the cap bounds alias expansion


def one_line(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


class _SizeError(yaml.YAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with bounded nesting and a bounded expanded size. An alias shares one node where
    a consumer (OmegaConf, a walk over the config) later copies a tree, so a few hundred bytes of
    nested aliases ("billion laughs") would expand to gigabytes; the size of every node as it
    would be expanded is counted while composing (an alias reuses its anchor's count), so such a
    file is refused after reading it once, while the aliases yaml.safe_dump writes for repeated
    values still load."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise _SizeError(f"nested deeper than {MAX_YAML_DEPTH} levels at line {line}")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._sizes:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            size = 1 + sum(self._sizes.get(id(c), 1) for c in children)
            if size > MAX_YAML_VALUES:
                line = node.start_mark.line + 1
                raise _SizeError(f"expands to more than {MAX_YAML_VALUES} values through aliases at line {line}")
            self._sizes[id(node)] = size
        return node


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text with the bounded loader; ``where`` names the source in error lines."""
    if len(text.encode()) > MAX_YAML_BYTES:
        raise ICLError(f"{where}: more than {MAX_YAML_BYTES} bytes; allowed: at most 1 MiB of YAML")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except (ValueError, OverflowError) as e:
        # Constructors raise these for well-formed scalars they cannot build (a 5000-digit integer,
        # the date 2001-13-45): to the caller they are invalid YAML like any other.
        raise yaml.YAMLError(one_line(e)) from None
    except _SizeError as e:
        raise ICLError(
            f"{where}: {e}; allowed: at most {MAX_YAML_DEPTH} levels and {MAX_YAML_VALUES} values once aliases "
            "are expanded"
        ) from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """Read a YAML file safely: a regular file of at most 1 MiB, UTF-8 text, bounded expansion and
    nesting. Every refusal is one ICLError line naming the file."""
    path = Path(path)
    if not path.exists():
        raise ICLError(f"{what} not found: {path}")
    if not path.is_file():
        raise ICLError(f"{path}: not a regular file; allowed: a YAML {what}")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)  # never more, whatever the file claims or grows to
    except OSError as e:
        raise ICLError(f"{path}: cannot be read ({e.strerror or e}); allowed: a readable YAML {what}") from None
    if len(data) > MAX_YAML_BYTES:
        size = max(path.stat().st_size, len(data))
        raise ICLError(f"{path}: {size} bytes; allowed: a YAML {what} of at most 1 MiB ({MAX_YAML_BYTES} bytes)")
    if b"\0" in data:
        raise ICLError(f"{path}: not a text file (NUL byte at offset {data.index(0)}); allowed: a UTF-8 YAML {what}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ICLError(
            f"{path}: not a text file (byte 0x{data[e.start]:02x} at offset {e.start} is not UTF-8); "
            f"allowed: a UTF-8 YAML {what}"
        ) from None
    try:
        return parse_yaml(text, str(path))
    except yaml.YAMLError as e:
        raise ICLError(f"{path}: not valid YAML ({one_line(e)})") from None
