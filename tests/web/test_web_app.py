"""The web app in a real browser (Debian's chromium driven by Playwright) against a local stack
with the demo checkpoint: sign-in and its refusals, generating and seeing the picture with its
infotext, cancelling, history pages, templates and batches, removal of people, a user key that
is shown no admin page, the admin page (a model uploaded in resumable parts, functions, users and
their keys), and the language switch. Each page is checked with axe-core (no serious
or critical violation) under the page's real Content-Security-Policy, and the main pages are
photographed into docs/img/ for the README and docs/web.md."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests import model_files as mf
from tests.data.fetch_photos import fetch
from tests.support_stack import REPO, RunningStack

CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / "web" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = REPO / "docs" / "img"

if not CHROMIUM.exists() and os.environ.get("SD_REQUIRE_BROWSER"):  # CI installs it
    pytest.fail("SD_REQUIRE_BROWSER is set and /usr/bin/chromium is absent", pytrace=False)
if not CHROMIUM.exists():
    pytest.skip(
        "no /usr/bin/chromium: install Debian's chromium (make install and .ci/run do)",
        allow_module_level=True,
    )

from playwright.sync_api import (  # noqa: E402
    Browser,
    ConsoleMessage,
    Page,
    Route,
    expect,
    sync_playwright,
)

pytestmark = pytest.mark.slow
TIMEOUT_MS = 120_000
PART = 5 * 1024 * 1024  # S3's smallest part size: a model a little larger goes in two parts
expect.set_options(timeout=TIMEOUT_MS)  # a worker's first task loads the checkpoint


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    assert (REPO / "web" / "dist" / "index.html").is_file(), "web/dist: run `make install`"
    running = RunningStack(
        tmp_path_factory.mktemp("web"), SD_PREVIEW_EVERY="1", SD_PART_SIZE=str(PART)
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, stack: RunningStack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 820}, base_url=stack.url)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []

    def console(msg: ConsoleMessage) -> None:
        if "Content Security Policy" in msg.text:
            problems.append(msg.text)

    tab.on("console", console)
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    yield tab
    context.close()
    assert not problems, f"the page broke its CSP or threw: {problems}"


def sign_in(page: Page, key: str) -> None:
    page.goto("/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("main[data-page='generate']:not([aria-busy])")).to_be_attached()


def open_page(page: Page, path: str) -> None:
    page.goto(f"/#/{path}")
    expect(page.locator(f"main[data-page='{path}']:not([aria-busy])")).to_be_attached()


def no_serious_violations(page: Page, what: str) -> None:
    """axe-core's rules on the page as it is now: no serious or critical violation. Its source
    is evaluated through the DevTools protocol, as add_script_tag's inline script would be
    refused by the page's own CSP (script-src 'self')."""
    page.evaluate(AXE.read_text())
    found = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
             .map(v => ({id: v.id, impact: v.impact,
                         nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))"""
    )
    serious = [v for v in found if v["impact"] in ("serious", "critical")]
    assert not serious, f"{what}: {serious}"


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_a_wrong_key_is_refused_with_a_clear_message(page: Page) -> None:
    page.goto("/")
    no_serious_violations(page, "sign-in")
    shot(page, "web-sign-in.png")
    page.get_by_label("API key").fill("sd_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not accepted (401)")
    expect(page.get_by_role("link", name="Generate")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('sd-api-key')") is None


def test_generate_shows_the_picture_with_its_infotext(page: Page, stack: RunningStack) -> None:
    sign_in(page, stack.credentials["user_key"])
    # the key lives in this tab's sessionStorage only: not in the URL, not in a cookie
    assert page.evaluate("sessionStorage.getItem('sd-api-key')") == stack.credentials["user_key"]
    assert stack.credentials["user_key"] not in page.url and not page.context.cookies()
    no_serious_violations(page, "generate")
    page.get_by_label("Prompt", exact=True).fill("a blue square on a yellow background")
    page.get_by_label("Steps").fill("10")
    page.get_by_label("Seed").fill("7")
    page.get_by_role("button", name="Generate").click()
    result = page.get_by_test_id("result").first
    expect(result.get_by_test_id("infotext")).to_contain_text("Steps: 10")
    expect(result.get_by_test_id("infotext")).to_contain_text("Seed: 7")
    picture = result.locator("img")
    expect(picture).to_have_js_property("complete", True)
    assert picture.evaluate("img => img.naturalWidth") == 64
    expect(page.get_by_test_id("progress-text")).to_have_attribute("data-status", "succeeded")
    # the picture is the task's PNG, read through its signed URL
    png = httpx.get(picture.get_attribute("src") or "", timeout=30)
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)
    # reuse the seed, then send the picture to img2img: the source panel shows it
    page.get_by_label("Seed").fill("-1")
    page.get_by_role("button", name="Reuse last seed").click()
    expect(page.get_by_label("Seed")).to_have_value("7")
    result.get_by_role("button", name="Send to img2img").click()
    expect(page.get_by_role("button", name="Clear mask")).to_be_visible()
    shot(page, "web-generate.png")
    no_serious_violations(page, "generate with a result")


def test_inpainting_sends_the_painted_mask(page: Page, stack: RunningStack) -> None:
    sign_in(page, stack.credentials["user_key"])
    photo = Image.new("RGB", (64, 64), (255, 255, 255))
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    page.locator("input[type=file]").set_input_files(
        {"name": "white.png", "mimeType": "image/png", "buffer": buf.getvalue()}
    )
    canvas = page.get_by_label("Inpainting mask: paint the part to redraw", exact=True)
    expect(canvas).to_have_js_property("width", 64)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2)
    page.mouse.up()
    page.get_by_label("Steps").fill("2")
    with page.expect_request(lambda r: r.url.endswith("/img2img")) as sent:
        page.get_by_role("button", name="Generate").click()
    body = sent.value.post_data_json
    assert body["init_images"][0].startswith("data:image/png") and body["mask"].startswith("data:")
    expect(page.get_by_test_id("progress-text")).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_test_id("infotext").first).to_contain_text("Denoising strength")


def test_a_refused_submit_then_cancel_a_long_task(page: Page, stack: RunningStack) -> None:
    sign_in(page, stack.credentials["user_key"])
    page.get_by_label("Steps").fill("150")
    page.get_by_label("Batch count").fill("16")
    page.get_by_role("button", name="Generate").click()
    # at the checkpoint's size as the API assumes it before the task runs (512): over the cap
    expect(page.get_by_role("alert")).to_contain_text("steps, width, height, batch_size, n_iter")
    expect(page.get_by_role("alert")).to_contain_text("pixel-steps")
    # the largest task the API takes at 64x64: 150 steps x 16 pictures
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_label("Steps").fill("150")
    page.get_by_label("Batch count").fill("16")
    page.get_by_role("button", name="Generate").click()
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("progress-text")).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_test_id("progress-text")).to_contain_text("cancelled")
    expect(page.get_by_role("alert")).to_be_hidden()  # the refusal's message went with the submit


def test_history_pages_by_cursor_and_filters(page: Page, stack: RunningStack) -> None:
    # one picture, and eleven more tasks than a page holds, made cheaply: submitted and
    # cancelled at once
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=120) as api:
        body = {"prompt": "a green triangle on a black background", "steps": 10, "seed": 3}
        assert api.post("/txt2img", json=body).json()["status"] == "succeeded"
        for n in range(11):
            body = {"prompt": f"history {n}", "steps": 1, "width": 64, "height": 64}
            task = api.post("/txt2img", json=body, headers={"Request-Type": "async"}).json()
            api.post(f"/tasks/{task['taskId']}/cancellation")
        total = 0
        cursor: str | None = None
        while True:
            query = {"limit": 50, **({"cursor": cursor} if cursor else {})}
            listed = api.get("/tasks", params=query).json()
            total += len(listed["tasks"])
            cursor = listed["cursor"]
            if not cursor:
                break
    sign_in(page, stack.credentials["user_key"])
    open_page(page, "history")
    rows = page.get_by_test_id("history-row")
    expect(rows).to_have_count(10)
    first_page = set(rows.evaluate_all("rs => rs.map(r => r.dataset.taskId)"))
    no_serious_violations(page, "history")
    seen = set(first_page)
    page_first = rows.first.get_attribute("data-task-id") or ""
    while page.get_by_test_id("next-page").is_enabled():
        page.get_by_test_id("next-page").click()
        expect(page.locator("main .view[aria-busy]")).to_have_count(0)
        expect(rows.first).not_to_have_attribute("data-task-id", page_first)
        page_first = rows.first.get_attribute("data-task-id") or ""
        ids = set(rows.evaluate_all("rs => rs.map(r => r.dataset.taskId)"))
        assert ids and not ids & seen, "a page repeated a task"
        seen |= ids
    assert len(seen) == total
    # the filter: only cancelled tasks
    page.get_by_role("button", name="First page").click()
    page.get_by_label("Status").select_option("cancelled")
    # the filtered first page (at least the eleven cancelled above: a full page) replaces
    # whatever page was shown; until then rows of other statuses may still be there
    expect(rows).to_have_count(10)
    other = page.get_by_test_id("history-row").locator("td:nth-child(3)", has_not_text="cancelled")
    expect(other).to_have_count(0)
    statuses = rows.locator("td:nth-child(3)").all_inner_texts()
    assert statuses and set(statuses) == {"cancelled"}
    rows.first.get_by_role("button").click()
    expect(page.get_by_test_id("detail-status")).to_contain_text("cancelled")
    no_serious_violations(page, "history detail")
    # the earlier tests' pictures, with their thumbnails, for the docs
    page.get_by_role("button", name="Back to the list").click()
    page.get_by_label("Status").select_option("succeeded")
    expect(page.locator("main .view[aria-busy]")).to_have_count(0)
    expect(rows.first).to_contain_text("succeeded")
    expect(rows.first.locator("img")).to_have_js_property("complete", True)
    shot(page, "web-history.png")


def test_templates_run_and_batch_grid(page: Page, stack: RunningStack) -> None:
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=30) as api:
        for name, steps in (("tiny-one", 1), ("tiny-two", 2)):
            body = {"name": name, "steps": steps, "width": 64, "height": 64, "description": name}
            assert api.post("/templates", json=body).status_code == 201
    sign_in(page, stack.credentials["user_key"])
    open_page(page, "templates")
    page.get_by_role("button", name="Run: tiny-two").click()
    expect(page.get_by_test_id("infotext").first).to_contain_text("Steps: 2")
    page.get_by_label("Include tiny-one in a batch").check()
    page.get_by_label("Include tiny-two in a batch").check()
    page.get_by_role("button", name="Run a batch of the ticked templates").click()
    grid = page.get_by_role("img", name="Comparison grid")
    expect(grid).to_have_js_property("complete", True)
    # two 64 px pictures side by side, under their labels
    assert grid.evaluate("img => [img.naturalWidth, img.naturalHeight > 64]") == [128, True]
    no_serious_violations(page, "templates")
    shot(page, "web-templates.png")


def test_remove_people_shows_the_result_and_the_mask(page: Page, stack: RunningStack) -> None:
    sign_in(page, stack.credentials["user_key"])
    open_page(page, "remove")
    no_serious_violations(page, "remove people")
    page.get_by_label("Photo").set_input_files(
        {"name": "astronaut.png", "mimeType": "image/png", "buffer": fetch().read_bytes()}
    )
    page.get_by_label("Steps").fill("2")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_label("Grow the mask by (px)").fill("2")
    page.get_by_label("Blur its edge by (px)").fill("2")
    page.get_by_role("button", name="Remove people").last.click()
    expect(page.get_by_test_id("coverage")).to_contain_text("%")
    coverage = float(re.findall(r"[\d.]+", page.get_by_test_id("coverage").inner_text())[0])
    assert 30 < coverage < 90
    expect(page.get_by_test_id("result")).to_have_count(2)
    expect(page.get_by_role("img", name="Result 2")).to_have_js_property("complete", True)
    shot(page, "web-remove.png")


def test_a_user_key_sees_no_admin_page(page: Page, stack: RunningStack) -> None:
    sign_in(page, stack.credentials["user_key"])
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    page.goto("/#/admin")  # typed by hand: the page shows Generate, and the API says 403 anyway
    expect(page.locator("main[data-page='generate']")).to_be_attached()
    answer = httpx.get(f"{stack.url}/admin/models", headers=stack.headers, timeout=10)
    assert answer.status_code == 403
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, stack.credentials["admin_key"])
    page.get_by_role("link", name="Admin").click()
    expect(page.get_by_test_id("admin-model").filter(has_text="demo").first).to_be_visible()
    no_serious_violations(page, "admin")


def part_number(route: Route) -> int:
    """The part a PUT sends (the local stack's part URLs end in /uploads/<id>/<n>)."""
    return int(route.request.url.split("?")[0].rsplit("/", 1)[1])


def test_admin_uploads_a_model_in_resumable_parts(
    page: Page, stack: RunningStack, tmp_path: Path
) -> None:
    # a LoRA a little over one part: two parts (a file on disk: the browser reads it itself)
    chosen = tmp_path / "web-lora.safetensors"
    chosen.write_bytes(mf.safetensors(mf.lora_shapes(rank=6144), "F32"))
    assert PART < chosen.stat().st_size < 2 * PART
    sign_in(page, stack.credentials["admin_key"])
    open_page(page, "admin")
    no_serious_violations(page, "admin")
    puts: list[int] = []

    def refuse_part_2(route: Route) -> None:  # as S3 answers a stale URL: not tried again
        puts.append(part_number(route))
        if puts[-1] == 2:
            route.fulfill(status=403, body="Request has expired")
        else:
            route.continue_()

    page.route("**/uploads/**", refuse_part_2)
    page.get_by_test_id("upload-file").set_input_files(chosen)
    expect(page.get_by_label("Model name")).to_have_value("web-lora")
    page.get_by_label("Type", exact=True).select_option("lora")
    page.get_by_role("button", name="Upload", exact=True).click()
    status = page.get_by_test_id("upload-status")
    expect(status).to_have_attribute("data-phase", "failed")
    expect(status).to_contain_text("Part 2 could not be sent (403)")
    assert sorted(puts) == [1, 2]
    model = page.get_by_test_id("admin-model").filter(has_text="web-lora")
    expect(model).to_have_attribute("data-status", "registering")
    expect(model.get_by_test_id("model-status")).to_contain_text("uploading")
    # the page reloaded and the same file chosen again: part 1 is there, part 2 goes, and a
    # network error on its first try is tried again
    page.unroute("**/uploads/**")
    puts.clear()

    def reset_once(route: Route) -> None:
        puts.append(part_number(route))
        if puts.count(puts[-1]) == 1:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.reload()
    expect(page.locator("main[data-page='admin']:not([aria-busy])")).to_be_attached()
    page.route("**/uploads/**", reset_once)
    page.get_by_test_id("upload-file").set_input_files(chosen)
    page.get_by_label("Type", exact=True).select_option("lora")
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(status).to_have_attribute("data-phase", "done")
    expect(status).to_contain_text("web-lora is checked and usable")
    expect(status).to_contain_text("1 part(s) sent, 1 already there")
    assert puts == [2, 2]
    # the server verified it: usable, with what the check found
    expect(model).to_have_attribute("data-status", "unloaded")
    model.get_by_role("button", name="Details: web-lora").click()
    expect(page.get_by_test_id("model-detail")).to_contain_text("6144")
    no_serious_violations(page, "admin after an upload")
    # and it is among the LoRAs to generate with
    open_page(page, "generate")
    expect(page.get_by_label("web-lora", exact=True)).to_be_checked(checked=False)
    # renamed, then deleted (which asks first)
    open_page(page, "admin")
    model.get_by_role("button", name="Details: web-lora").click()
    page.get_by_label("New name").fill("web-lora-2")
    page.get_by_role("button", name="Rename").click()
    renamed = page.locator("[data-testid=admin-model][data-name='web-lora-2']")
    expect(renamed).to_have_attribute("data-status", "unloaded")
    expect(page.locator("[data-testid=admin-model][data-name='web-lora']")).to_have_count(0)
    page.get_by_role("button", name="Delete: web-lora-2").click()
    page.get_by_role("button", name="Confirm: Delete web-lora-2").click()
    expect(renamed).to_have_count(0)
    gone = httpx.get(f"{stack.url}/admin/models/web-lora-2", headers=stack.admin_headers)
    assert gone.status_code == 404


def test_admin_functions_users_and_a_key_shown_once(page: Page, stack: RunningStack) -> None:
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=120) as api:
        # the demo checkpoint's inference function (started by the tests above: quick then)
        body = {"prompt": "a dot", "steps": 1, "width": 64, "height": 64}
        assert api.post("/txt2img", json=body).json()["status"] == "succeeded"
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, stack.credentials["admin_key"])
    open_page(page, "admin")
    # functions: the demo's, updated
    function = page.get_by_test_id("admin-function").filter(has_text="demo")
    function.get_by_role("checkbox").check()
    page.get_by_label("Memory (MB)", exact=True).fill("3072")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_test_id("functions-status")).to_have_text("Updated 1 function(s).")
    expect(function).to_contain_text("memoryMb: 3072")
    # a user, whose key is shown once, copied, and works
    page.get_by_label("User name").fill("web-alice")
    page.get_by_role("button", name="Create user").click()
    secret = page.get_by_test_id("secret")
    expect(secret.get_by_role("textbox", name="API key")).to_have_value(re.compile(r"^sd_"))
    key = secret.get_by_role("textbox", name="API key").input_value()
    secret.get_by_role("button", name="Copy: API key").click()
    expect(secret.get_by_text("Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    assert key not in page.evaluate("JSON.stringify([{...sessionStorage}, {...localStorage}])")
    bearer = {"Authorization": f"Bearer {key}"}
    account = httpx.get(f"{stack.url}/account", headers=bearer, timeout=10)
    assert account.json()["user"] == "web-alice"
    user = page.get_by_test_id("admin-user").filter(has_text="web-alice")
    expect(user.locator("code")).to_have_text(re.compile(r"^" + re.escape(key[:8])))
    no_serious_violations(page, "admin with a new key")
    # another key, then revoke the user: both keys are refused
    user.get_by_role("button", name="New key: web-alice").click()
    expect(secret.get_by_role("textbox", name="API key")).not_to_have_value(key)
    second = secret.get_by_role("textbox", name="API key").input_value()
    expect(user.locator("code")).to_have_count(2)
    page.get_by_role("button", name="Done, hide them").click()
    expect(secret).to_have_count(0)
    user.get_by_role("button", name="Revoke: web-alice").click()
    page.get_by_role("button", name="Confirm: Revoke web-alice").click()
    expect(user).to_have_attribute("data-disabled", "true")
    for refused in (key, second):
        answer = httpx.get(
            f"{stack.url}/account", headers={"Authorization": f"Bearer {refused}"}, timeout=10
        )
        assert answer.status_code == 401
    shot(page, "web-admin.png")
    page.set_viewport_size({"width": 375, "height": 800})
    expect(page.get_by_role("button", name="Create user")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_429_counts_down_retry_after(page: Page, stack: RunningStack) -> None:
    sign_in(page, stack.credentials["user_key"])
    # a refusal over the per-user limit, as the API answers it (its own limits are tested in
    # tests/functional; provoking one here would cost a minute of requests)
    page.route(
        "**/txt2img",
        lambda route: route.fulfill(
            status=429,
            headers={"Retry-After": "2", "Content-Type": "application/json"},
            body='{"error": "too_many_requests", "message": "over the limit"}',
        ),
    )
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_role("alert")).to_contain_text("try again in 2 s")
    expect(page.get_by_role("alert")).to_contain_text("try again in 1 s")
    expect(page.get_by_role("alert")).to_contain_text("You may try again now")


def test_chinese_and_a_phone_width(page: Page, stack: RunningStack) -> None:
    sign_in(page, stack.credentials["user_key"])
    page.get_by_label("Language").select_option("zh")
    expect(page.get_by_role("link", name="生成")).to_be_visible()
    expect(page.get_by_label("提示词", exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    no_serious_violations(page, "generate in Chinese")
    page.set_viewport_size({"width": 375, "height": 800})
    expect(page.get_by_role("button", name="生成")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(page, "web-generate-zh-phone.png")
    page.get_by_label("语言").select_option("en")
