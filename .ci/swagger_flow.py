"""The tutorial's Swagger steps, clicked through in a real browser (headless Chromium):

1. sign up with POST /signup's "Try it out";
2. click Authorize and log in with email and password (the OAuth2 password flow, which
   Swagger UI sends to /login as a form);
3. call GET /profile with "Try it out" and see 200 with the user's email;
4. call POST /logout the same way (204), and GET /profile again: 401, the session has ended.

Usage: python swagger_flow.py BASE_URL CHROMIUM_PATH
"""

import json
import sys
import uuid

from playwright.sync_api import expect, sync_playwright

BASE_URL, CHROMIUM = sys.argv[1], sys.argv[2]
EMAIL = f"swagger-{uuid.uuid4().hex[:12]}@example.com"
PASSWORD = "mypassword123"


def try_it_out(page, operation):
    """Expands an operation and presses "Try it out"; returns the operation's block."""
    block = page.locator(f"#operations-auth-{operation}")
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    return block


def response_of(block):
    """The status and body Swagger UI shows after "Execute"."""
    status = block.locator(".live-responses-table .response .response-col_status").first
    expect(status).to_be_visible(timeout=15000)
    body = block.locator(".live-responses-table .response-col_description pre").first
    if body.count() == 0:
        return status.inner_text().strip(), ""
    return status.inner_text().strip(), body.inner_text()


def execute_again(block):
    """Presses "Execute" once more and waits for a new response."""
    block.locator("button.btn-clear").first.click()
    block.locator("button.execute").click()
    return response_of(block)


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--no-first-run"],
    )
    page = browser.new_page()
    page.goto(f"{BASE_URL}/docs")
    expect(page.locator("#operations-auth-signup")).to_be_visible(timeout=15000)

    # 1. Sign up.
    block = try_it_out(page, "signup")
    block.locator("textarea.body-param__text").fill(
        json.dumps({"email": EMAIL, "password": PASSWORD}))
    block.locator("button.execute").click()
    status, body = response_of(block)
    assert status == "201", f"signup answered {status}: {body}"
    print(f"swagger-flow: signed up {EMAIL} (201)")

    # 2. Authorize with the OAuth2 password flow.
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    expect(dialog).to_be_visible()
    dialog.locator("#oauth_username").fill(EMAIL)
    dialog.locator("#oauth_password").fill(PASSWORD)
    oauth = dialog.locator(".auth-container", has=page.locator("#oauth_username"))
    oauth.locator("button.authorize").click()
    # Swagger UI replaces the form with "Authorized" once it holds a token, or shows the error
    # the token endpoint returned.
    outcome = dialog.locator("h6", has_text="Authorized").or_(dialog.locator(".errors"))
    expect(outcome.first).to_be_visible(timeout=15000)
    errors = dialog.locator(".errors")
    assert errors.count() == 0, f"authorization failed: {errors.first.inner_text()}"
    dialog.locator("button.btn-done").first.click()
    print("swagger-flow: authorized through the OAuth2 password flow (POST /login as a form)")

    # 3. The protected route.
    block = try_it_out(page, "profile")
    block.locator("button.execute").click()
    status, body = response_of(block)
    assert status == "200", f"profile answered {status}: {body}"
    profile = json.loads(body)
    assert profile["email"] == EMAIL, profile
    assert profile["message"] == "Access granted", profile
    print("swagger-flow: GET /profile answered 200 with the user's email")

    # 4. Log out, and the same token no longer opens /profile.
    logout = try_it_out(page, "logout")
    logout.locator("button.execute").click()
    status, body = response_of(logout)
    assert status == "204", f"logout answered {status}: {body}"
    print("swagger-flow: POST /logout answered 204")
    status, body = execute_again(block)
    assert status == "401", f"profile after logout answered {status}: {body}"
    assert json.loads(body)["detail"] == "Invalid or expired token", body
    print("swagger-flow: GET /profile after logout answered 401")
    browser.close()
