"""Who writes and who reads each buffer: the program as a graph, for consumers that fuse or map ops.

Engines and the hardware generator look ops up through this index (by op
name and by the buffers the op classes declare), never by parsing buffer
names.
"""

from __future__ import annotations

from dataclasses import dataclass

from .op import get_op


@dataclass(frozen=True)
class Node:
    index: int
    attrs: dict

    @property
    def op(self) -> str:
        return self.attrs["op"]

    @property
    def inputs(self) -> list[str]:
        return get_op(self.op).input_buffers(self.attrs)

    @property
    def outputs(self) -> list[str]:
        return get_op(self.op).output_buffers(self.attrs)

    @property
    def name(self) -> str:
        """The trained layer this node comes from (its first output buffer in files that record none)."""
        return self.attrs.get("name") or self.outputs[0]

    def __getitem__(self, key):
        return self.attrs[key]

    def get(self, key, default=None):
        return self.attrs.get(key, default)


class Graph:
    """Producer and consumers of every buffer of a program (validate the program first)."""

    def __init__(self, program: list[dict]):
        self.nodes = [Node(i, n) for i, n in enumerate(program)]
        self._producer: dict[str, Node] = {}
        self._consumers: dict[str, list[Node]] = {}
        for node in self.nodes:
            for b in node.inputs:
                self._consumers.setdefault(b, []).append(node)
            for b in node.outputs:
                self._producer[b] = node

    def producer(self, buffer: str) -> Node | None:
        """The node writing ``buffer`` (None for the image)."""
        return self._producer.get(buffer)

    def consumers(self, buffer: str) -> list[Node]:
        return list(self._consumers.get(buffer, []))

    def layer_name(self, buffer: str) -> str:
        """Name of the layer that writes ``buffer`` (see :attr:`Node.name`)."""
        node = self.producer(buffer)
        return buffer if node is None else node.name

    def of_kind(self, *ops: str) -> list[Node]:
        return [n for n in self.nodes if n.op in ops]
