"""Every document the README and docs/ point to exists (docs/verification.md once linked a
docs/configuration.md that never did)."""

from __future__ import annotations

import re

from tests.support.paths import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([\w./-]+\.md)\)|(?<![\w/.])((?:docs|bench|firmware-config)/[\w.-]+\.md)")


def test_linked_documents_exist() -> None:
    missing = []
    for page in PAGES:
        for match in LINK.finditer(page.read_text()):
            relative, rooted = match.groups()
            target = (page.parent / relative) if relative else (REPO / rooted)
            if not target.exists():
                missing.append(f"{page.relative_to(REPO)} -> {relative or rooted}")
    assert not missing, missing
    assert "docs/aos.md" in (REPO / "README.md").read_text()
