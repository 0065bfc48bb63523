"""Checks of a built Snakemake report shared by the tests that build one: no
docutils warning or system message anywhere, and the page renders in
headless Chromium (Debian's ``chromium``; skipped with the reason where it is
missing, required where QDESIGN_REQUIRE_CHROMIUM=1, as in .ci/run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# docutils reports "<string>:3: (WARNING/2) Duplicate explicit target name: ..." on stderr
# and leaves a "System Message" block in the HTML it writes
DOCUTILS = re.compile(r"\((?:INFO|WARNING|ERROR|SEVERE)/\d\)|System Message|system-message|Docutils System Messages")


def docutils_messages(log: str, report: Path) -> list[str]:
    """Every docutils message in a report build's output and in the report itself."""
    found = [line for line in log.splitlines() if DOCUTILS.search(line)]
    html = report.read_text(errors="replace")
    found += [html[max(0, m.start() - 80) : m.end() + 120] for m in DOCUTILS.finditer(html)]
    return found


def chromium() -> str:
    """The headless browser, or a skip (a failure where CI requires it)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("QDESIGN_REQUIRE_CHROMIUM") == "1":
        pytest.fail("QDESIGN_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)")
    pytest.skip("headless Chromium not installed (Debian: apt-get install chromium); the report check needs it")


def rendered_dom(page: Path, tmp: Path) -> tuple[str, str]:
    """(the DOM after the page's scripts ran, the browser's console output)."""
    res = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout, res.stderr


def check_in_chromium(report: Path, tmp: Path, categories: list[str]) -> None:
    """The report's app renders its menu with every category, and no script fails."""
    dom, console = rendered_dom(report, tmp)
    errors = [line for line in console.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert not errors, errors[:5]
    assert "Snakemake" in dom and "Workflow" in dom, dom[:500]
    missing = [c for c in categories if c not in dom]
    assert not missing, f"categories not in the rendered report menu: {missing}"


def check_page_in_chromium(page: Path, tmp: Path, needles: list[str]) -> None:
    """A report page renders with its tables and the text it must show."""
    dom, _ = rendered_dom(page, tmp)
    assert "<table" in dom
    missing = [n for n in needles if n not in dom]
    assert not missing, f"{page.name}: {missing} not in the rendered page"
