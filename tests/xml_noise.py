"""Well-formed noise for XML readers' tests: shared by tests/location and the build parity
test (tests/ is on the path of every test directory, as for `bench_scripts`)."""

from __future__ import annotations

from lxml import etree


def with_comments_everywhere(doc: bytes) -> bytes:
    """`doc` with a comment and a processing instruction as the last children of every
    element (last, so that no element's own text moves into a tail)."""
    root = etree.fromstring(doc)
    for el in list(root.iter()):
        el.append(etree.Comment(" note "))
        el.append(etree.ProcessingInstruction("app", "x=1"))
    return etree.tostring(root)
