"""report.html in a real headless Chromium (Debian's chromium + chromium-driver, installed by .ci/run): it
renders, its filters work, nothing is fetched; and input can never add markup or script to it."""

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli

from auditor.emit import report_html

ROOT = Path(__file__).parents[1]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
REQUIRED = os.environ.get("AUDITOR_REQUIRE_BROWSER") == "1"  # .ci/run installs the browser and sets this


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """(driver on report.html, its report.json) for the bundled fixtures with a baseline and an exception."""
    if not (CHROMIUM and DRIVER):
        if REQUIRED:
            pytest.fail("chromium and chromedriver are required (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium / chromedriver on this machine (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    work = tmp_path_factory.mktemp("html")
    accept = work / "exceptions.yaml"
    accept.write_text(
        'version: 1\nexceptions:\n  - {identity: support-bot, kind: admin-grant, reason: "break-glass", '
        "expires: 2099-01-01}\n"
    )
    first, out = work / "first", work / "out"
    base = ["audit", "--aws-dir", ROOT / "fixtures/aws", "--gcp-dir", ROOT / "fixtures/gcp", "-q"]
    assert run_cli(*base, "--out", first).code == 0
    assert run_cli(*base, "--out", out, "--baseline", first, "--exceptions", accept).code == 0
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1800",
                 f"--user-data-dir={work / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get((out / "report.html").resolve().as_uri())
        yield driver, json.loads((out / "report.json").read_text())
    finally:
        driver.quit()


def _visible_rows(driver) -> list:
    return [r for r in driver.find_elements("css selector", "#findings tbody tr") if r.is_displayed()]


def _choose(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", element_id)).select_by_value(value)


def test_it_renders_the_summary_chart_and_every_finding(page):
    driver, report = page
    assert driver.title.startswith("Permission scope audit")
    assert len(driver.find_elements("css selector", "#summary tbody tr")) == len(report["identities"])
    bars = driver.find_elements("css selector", "#unused-chart rect:not(.previous)")
    assert len(bars) == min(len(report["identities"]), report_html.MAX_CHART)
    assert driver.find_elements("css selector", "#unused-chart rect.previous"), "last month's share is drawn"
    assert len(driver.find_elements("css selector", "#findings tbody tr")) == len(report["findings"])
    assert "Since the previous audit" in driver.find_element("id", "drift").find_element("xpath", "..").text


def test_the_filters_show_exactly_the_matching_findings(page):
    driver, report = page
    open_ = [f for f in report["findings"] if (f["exception"] or {}).get("status") != "accepted"]
    assert len(_visible_rows(driver)) == len(open_) < len(report["findings"])
    _choose(driver, "f-severity", "critical")
    assert len(_visible_rows(driver)) == sum(1 for f in open_ if f["severity"] == "critical")
    _choose(driver, "f-provider", "gcp")
    expected = [f for f in open_ if f["severity"] == "critical" and f["provider"] == "gcp"]
    assert [r.find_elements("tag name", "td")[1].text for r in _visible_rows(driver)] == [f["name"] for f in expected]
    _choose(driver, "f-severity", "")
    _choose(driver, "f-provider", "")
    box = driver.find_element("id", "f-text")
    box.send_keys("deploy-agent")
    shown = _visible_rows(driver)
    assert shown and all("deploy-agent" in r.text for r in shown)
    assert len(shown) == sum(1 for f in open_ if "deploy-agent" in f["name"] or "deploy-agent" in f["title"])
    box.clear()
    box.send_keys(" ")  # an input event after clearing
    box.clear()
    driver.find_element("id", "f-accepted").click()
    assert len(_visible_rows(driver)) == len(report["findings"])
    assert f"{len(report['findings'])} of {len(report['findings'])}" in driver.find_element("id", "f-count").text


def test_nothing_is_fetched_and_nothing_fails(page):
    driver, _ = page
    page_url = driver.current_url
    loaded = set()  # every request made for the report's document (the browser's own new-tab page aside)
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent" and message["params"].get("documentURL") == page_url:
            loaded.add(message["params"]["request"]["url"])
    assert loaded == {page_url}, loaded
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)


def test_input_cannot_add_markup_or_script():
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&"
    ident = {
        "provider": "aws", "account": hostile, "identity": hostile, "name": hostile, "kind": "role",
        "selected_by": hostile, "grant_sources": [hostile], "granted": 1, "used": 1, "denied": 0, "unused": 0,
        "unobservable": 0, "unused_percent": 0.0,
        "findings": {"critical": 1, "high": 0, "medium": 0, "low": 0, "info": 0},
        "used_permissions": [{"action": hostile, "calls": 1, "last_seen": hostile, "evidence": [hostile]}],
        "apply_commands": [hostile],
    }  # fmt: skip
    finding = {"provider": "aws", "identity": hostile, "name": hostile, "kind": hostile, "severity": "critical",
               "title": hostile, "actions": [hostile], "exception": None}  # fmt: skip
    summary = {"identities": 1, "granted": 1, "used": 1, "unused": 0, "unobservable": 0, "worst_severity": "critical",
               "findings": ident["findings"]}  # fmt: skip
    window = {"aws": {"start": hostile, "end": hostile}}
    doc = {"generated_at": hostile, "tool": {"version": hostile}, "windows": window, "summary": summary,
           "identities": [ident], "findings": [finding]}  # fmt: skip
    parser = _Tags()
    parser.feed(report_html.render(doc))
    assert parser.tags.count("script") == 1 and "img" not in parser.tags
