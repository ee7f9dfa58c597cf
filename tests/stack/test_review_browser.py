"""The review desk in a real browser: Debian's chromium driven by Playwright (its own browser
download is not used; infra/tools/browser.sh installs chromium and scripts/test.sh exports
VITRINE_CHROMIUM).

VITRINE_SCREENSHOTS_DIR=docs/screenshots writes the main pages' screenshots there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support.card_text import DESCRIPTION
from tests.support.pipeline import REPO, ensure_stack
from tests.support.review_desk import Desk, card, iter_desk, result, upsert

pytestmark = pytest.mark.pipeline

CHROMIUM = os.environ.get("VITRINE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = os.environ.get("VITRINE_SCREENSHOTS_DIR")


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    ensure_stack()
    yield from iter_desk(tmp_path_factory.mktemp("review-browser"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: run infra/tools/browser.sh (scripts/test.sh does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="pt-BR")
    dialogs: list[str] = []
    opened = context.new_page()
    opened.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    opened.dialogs = dialogs  # type: ignore[attr-defined]
    yield opened
    context.close()


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def sign_in(page: Page, desk: Desk, role: str) -> None:
    name, password = desk.user(role)
    page.goto(f"{desk.url}/login")
    shot(page, "review-login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator(".who")).to_contain_text(name)


def test_log_in_filter_and_open_a_card(desk: Desk, page: Page) -> None:
    samples = sorted((REPO / "samples").glob("*.jpg"))
    for i, colour in enumerate(["azul", "verde", "preto"]):
        desk.seed(
            f"{desk.ns.name}/list-{i}.jpg",
            card(f"Garrafa térmica {colour} de aço", colour=colour),
            samples[i % len(samples)].read_bytes(),
            flagged=i == 1,
        )
    target = desk.seed(
        f"{desk.ns.name}/kettle.jpg",
        card("Chaleira elétrica inconfundível"),
        samples[-1].read_bytes(),
    )
    sign_in(page, desk, "reviewer")
    page.fill("input[name=prefix]", f"{desk.ns.name}/")
    page.click("button:has-text('Filter')")
    expect(page.locator("tr[data-href]")).to_have_count(4)
    expect(page.locator(".flag")).to_have_count(1)
    page.wait_for_function(
        "[...document.querySelectorAll('td.thumb img')].every(i => i.complete && i.naturalWidth)"
    )
    widths = page.eval_on_selector_all("td.thumb img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 4 and max(widths) == 160  # generated renditions, longest side 160
    shot(page, "review-list")
    page.fill("input[name=q]", "inconfundível")
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**q=*")
    page.wait_for_load_state("load")  # desk.js (deferred) has run: the shortcuts are live
    expect(page.locator("tr[data-href]")).to_have_count(1)
    page.keyboard.press("j")  # select the first row, Enter opens it
    expect(page.locator("tr.selected")).to_have_count(1)
    page.keyboard.press("Enter")
    expect(page.locator("#product_name")).to_have_value("Chaleira elétrica inconfundível")
    assert target.key in page.url
    expect(page.locator(".photo img")).to_have_js_property("complete", True)
    shot(page, "review-card")


def test_an_invalid_edit_is_refused_with_its_message(desk: Desk, page: Page) -> None:
    ref = desk.seed("browser/invalid.jpg", card("Garrafa para edição inválida"))
    sign_in(page, desk, "reviewer")
    page.goto(f"{desk.url}/cards/{desk.bucket}/{ref.key}")
    page.fill("#description_long", "Descrição curta demais, com vinte palavras no máximo.")
    page.click("#save")
    error = page.locator("#error-description_long")
    expect(error).to_be_visible()
    expect(error).to_contain_text("too short")
    # what the person typed is still there, to fix
    expect(page.locator("#description_long")).to_have_value(
        "Descrição curta demais, com vinte palavras no máximo."
    )
    shot(page, "review-card-invalid-edit")
    row = desk.row(ref.key)
    assert row["edited_card"] is None and row["review_state"] == "pending"
    assert desk.reviews(ref.key) == []


def test_a_valid_edit_and_approve_land_in_sql_the_reviews_and_the_topic(
    desk: Desk, page: Page
) -> None:
    ref = desk.seed("browser/approve.jpg", card("Garrafa térmica para aprovar"))
    sign_in(page, desk, "reviewer")
    page.goto(f"{desk.url}/cards/{desk.bucket}/{ref.key}")
    page.fill("#product_name", "Garrafa térmica de aço inox 500 ml")
    page.fill("#feature_2", "Tampa com vedação que evita vazamentos")
    page.locator("#feature_2").press("Escape")  # leave the field: shortcuts apply again
    page.keyboard.press("a")  # approve, with the edit, in one transaction
    page.wait_for_url("**msg=Approved*")
    row = desk.row(ref.key)
    assert row["review_state"] == "approved"
    assert row["edited_card"]["product_name"] == "Garrafa térmica de aço inox 500 ml"
    assert row["card"]["product_name"] == "Garrafa térmica para aprovar"  # the model's
    decisions = [(r["decision"], r["fields"]) for r in desk.reviews(ref.key)]
    assert decisions == [
        ("edit", ["product_name", "features_list"]),
        ("approve", ["product_name", "features_list"]),
    ]
    messages = desk.approved_messages(keys=[ref.key])
    [message] = [m for m in messages if m["object"]["key"] == ref.key]
    assert message["ai_generated"] is True and message["edited"] is True
    assert message["card"]["product_name"] == "Garrafa térmica de aço inox 500 ml"
    assert message["card"]["features_list"][1] == "Tampa com vedação que evita vazamentos"


def test_a_viewer_cannot_approve(desk: Desk, page: Page) -> None:
    ref = desk.seed("browser/viewer.jpg", card("Garrafa vista por um visitante"))
    sign_in(page, desk, "viewer")
    page.goto(f"{desk.url}/cards/{desk.bucket}/{ref.key}")
    expect(page.locator("#approve")).to_have_count(0)
    expect(page.locator("#product_name")).to_be_disabled()
    page.keyboard.press("a")
    # even with the page's own CSRF token, the server refuses a viewer's approval
    status = page.evaluate(
        """async () => {
            const csrf = document.querySelector("input[name=csrf]").value;
            const body = new URLSearchParams({csrf, action: "approve"});
            const answer = await fetch(location.pathname, {method: "POST", body});
            return answer.status;
        }"""
    )
    assert status == 403
    assert desk.row(ref.key)["review_state"] == "pending"
    assert desk.reviews(ref.key) == []


def test_a_forged_post_without_a_csrf_token_is_refused(desk: Desk, page: Page) -> None:
    ref = desk.seed("browser/forged.jpg", card("Garrafa alvo de falsificação"))
    sign_in(page, desk, "reviewer")
    url = f"{desk.url}/cards/{desk.bucket}/{ref.key}"
    # the signed-in browser's cookies, no token
    answer = page.request.post(url, form={"action": "approve"}, max_redirects=0)
    assert answer.status == 403
    # a form on another site posting to the desk (the strict cookie is not even sent)
    page.goto(
        "data:text/html,<form method=post action='" + url + "'>"
        "<input name=action value=approve><button>go</button></form>"
    )
    page.click("button")
    page.wait_for_load_state()
    assert desk.row(ref.key)["review_state"] == "pending"
    assert desk.reviews(ref.key) == []


def test_hostile_model_output_is_text_in_the_browser(desk: Desk, page: Page) -> None:
    hostile = '"><script>alert("name")</script><img src=x onerror=alert(1)>'
    ref = desk.seed(
        f"{desk.ns.name}/hostile.jpg",
        card(
            f"Garrafa {hostile}",
            description_long=f"{DESCRIPTION} {hostile}",
            features_list=[f"Ponto {hostile}", "Segundo ponto", "Terceiro ponto"],
        ),
    )
    sign_in(page, desk, "reviewer")
    page.goto(f"{desk.url}/?prefix={desk.ns.name}/hostile")
    expect(page.locator("a.name")).to_have_text(f"Garrafa {hostile}")
    page.goto(f"{desk.url}/cards/{desk.bucket}/{ref.key}")
    expect(page.locator("#product_name")).to_have_value(f"Garrafa {hostile}")
    expect(page.locator("#feature_1")).to_have_value(f"Ponto {hostile}")
    assert page.locator("script:not([src])").count() == 0
    assert page.locator("img[src=x]").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_a_regenerated_card_shows_its_diff(desk: Desk, page: Page) -> None:
    values = card("Garrafa térmica antes da nova geração")
    ref = desk.seed("browser/regen.jpg", values)
    with desk.api("reviewer") as api:
        assert api.post(f"/v1/cards/{desk.bucket}/{ref.key}/approve", json={}).status_code == 200
    upsert(
        [
            result(
                ref,
                {
                    **values,
                    "product_name": "Garrafa térmica depois da nova geração",
                    "color_primary": "verde",
                },
                at=120,
            )
        ]
    )
    sign_in(page, desk, "viewer")
    page.goto(f"{desk.url}/cards/{desk.bucket}/{ref.key}")
    expect(page.locator("#diff")).to_contain_text("Garrafa térmica antes da nova geração")
    expect(page.locator("#diff")).to_contain_text("verde")
    expect(page.locator("#review-state")).to_have_text("pending")
    shot(page, "review-card-regenerated-diff")
