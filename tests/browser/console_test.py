"""Drives the admin console in a real headless Chromium (Selenium + the system chromedriver).

Started by tests/console.rs, which owns Redis, the backends and the proxy. Configuration comes from
the environment (ADMIN_URL, ADMIN_KEY, TARGET, NEW_BACKEND, DOOMED, SHOTS). At each point where the
Rust side must act or check something outside the browser, this script prints one line (`ADDED`,
`REMOVED`, `KILL`) and waits for `OK` on stdin. It ends with `RESULT <json>`, or exits non-zero
after printing `FAIL <why>`.
"""
import json
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ADMIN_URL = os.environ["ADMIN_URL"]
KEY = os.environ["ADMIN_KEY"]
TARGET = os.environ["TARGET"]
NEW_BACKEND = os.environ["NEW_BACKEND"]
DOOMED = os.environ["DOOMED"]
SHOTS = os.environ["SHOTS"]
WAIT = 20


def say(line):
    print(line, flush=True)


def sync(line):
    say(line)
    answer = sys.stdin.readline().strip()
    if answer != "OK":
        raise AssertionError(f"the test said {answer!r} after {line}")


def shot(driver, name):
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def until(driver, what, cond):
    def safe(d):
        try:
            return cond(d)
        except (StaleElementReferenceException, WebDriverException):
            return False
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(safe)
    except Exception as e:
        shot(driver, "failure")
        raise AssertionError(f"timed out waiting for {what}") from e


def row(driver, name):
    for r in driver.find_elements(By.CSS_SELECTOR, "#fe-body tr.frontend"):
        if r.get_attribute("data-name") == name:
            return r
    return None


def backend_item(driver, name, url):
    r = row(driver, name)
    if r is None:
        return None
    for li in r.find_elements(By.CSS_SELECTOR, "li.backend"):
        if li.get_attribute("data-url") == url:
            return li
    return None


def main():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="hipache-console-chrome-")
    for flag in [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900",
    ]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    result = {}
    try:
        driver.set_page_load_timeout(WAIT)
        t0 = time.time()
        driver.get(ADMIN_URL + "/")
        until(driver, "the login form", lambda d: d.find_element(By.ID, "key").is_displayed())
        shot(driver, "01-login")

        # A wrong key is refused, and nothing of the console shows.
        driver.find_element(By.ID, "key").send_keys("not-the-key")
        driver.find_element(By.ID, "login-button").click()
        until(driver, "the wrong key refused",
              lambda d: "Wrong key" in d.find_element(By.ID, "login-error").text)
        assert not driver.find_element(By.ID, "app").is_displayed(), "the console showed with a wrong key"
        result["wrong_key_message"] = driver.find_element(By.ID, "login-error").text
        shot(driver, "02-wrong-key")

        # The right key: the first page of frontends.
        driver.find_element(By.ID, "key").clear()
        driver.find_element(By.ID, "key").send_keys(KEY)
        driver.find_element(By.ID, "login-button").click()
        until(driver, "the first page of frontends",
              lambda d: len(d.find_elements(By.CSS_SELECTOR, "#fe-body tr.frontend")) >= 25)
        result["first_page_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#fe-body tr.frontend"))
        result["key_in_url"] = KEY in driver.current_url
        result["key_in_cookies"] = any(KEY in (c.get("value") or "") for c in driver.get_cookies())
        shot(driver, "03-frontends")

        # Next page, then back.
        first = driver.find_elements(By.CSS_SELECTOR, "#fe-body tr.frontend")[0].get_attribute("data-name")
        driver.find_element(By.ID, "next").click()
        until(driver, "page 2", lambda d: d.find_element(By.ID, "page-info").text.startswith("page 2"))
        second = driver.find_elements(By.CSS_SELECTOR, "#fe-body tr.frontend")[0].get_attribute("data-name")
        result["pages_differ"] = first != second
        driver.find_element(By.ID, "prev").click()
        until(driver, "page 1", lambda d: d.find_element(By.ID, "page-info").text.startswith("page 1"))

        # Find one frontend among 10,000.
        t = time.time()
        driver.find_element(By.ID, "search").send_keys(TARGET)
        until(driver, f"{TARGET} alone in the list",
              lambda d: [r.get_attribute("data-name") for r in
                         d.find_elements(By.CSS_SELECTOR, "#fe-body tr.frontend")] == [TARGET])
        result["search_seconds"] = round(time.time() - t, 3)
        shot(driver, "04-search")

        # Add a backend; the test checks that traffic reaches it.
        r = row(driver, TARGET)
        r.find_element(By.CSS_SELECTOR, "input.new-backend").send_keys(NEW_BACKEND)
        r.find_element(By.CSS_SELECTOR, "button.add-backend-button").click()
        until(driver, "the new backend listed", lambda d: backend_item(d, TARGET, NEW_BACKEND) is not None)
        result["add_message"] = driver.find_element(By.ID, "fe-message").text
        shot(driver, "05-backend-added")
        sync("ADDED")

        # A duplicate is refused with the API's message.
        r = row(driver, TARGET)
        r.find_element(By.CSS_SELECTOR, "input.new-backend").send_keys(NEW_BACKEND)
        r.find_element(By.CSS_SELECTOR, "button.add-backend-button").click()
        until(driver, "the duplicate refused",
              lambda d: "already in the frontend" in d.find_element(By.ID, "fe-message").text)
        result["duplicate_message"] = driver.find_element(By.ID, "fe-message").text

        # Remove it.
        backend_item(driver, TARGET, NEW_BACKEND).find_element(By.CSS_SELECTOR, "button.remove-backend").click()
        until(driver, "the new backend gone", lambda d: row(d, TARGET) is not None
              and backend_item(d, TARGET, NEW_BACKEND) is None)
        result["remove_message"] = driver.find_element(By.ID, "fe-message").text
        sync("REMOVED")

        # A backend killed (and seen failing by the proxy) shows dead.
        sync("KILL")
        driver.find_element(By.ID, "refresh").click()
        until(driver, "the killed backend flagged dead",
              lambda d: "is-dead" in (backend_item(d, TARGET, DOOMED).get_attribute("class") or ""))
        li = backend_item(driver, TARGET, DOOMED)
        result["dead_badge"] = li.find_element(By.CSS_SELECTOR, ".badge").text
        result["dead_detail"] = li.find_element(By.CSS_SELECTOR, ".detail").text
        shot(driver, "06-dead-backend")

        # Traffic charts.
        driver.find_element(By.ID, "tab-button-traffic").click()
        until(driver, "a requests/s figure", lambda d: "req/s" in d.find_element(By.ID, "now-rps").text)
        # A few samples (2 s apart), so that the charts have lines.
        until(driver, "three samples on the charts",
              lambda d: int(d.find_element(By.ID, "chart-rps").get_attribute("data-points") or 0) >= 3)
        result["rps_text"] = driver.find_element(By.ID, "now-rps").text
        result["worker_legend"] = driver.find_element(By.ID, "legend-conns").text
        # The chart was drawn: some pixel of the canvas is not transparent.
        result["chart_drawn"] = driver.execute_script(
            "const c=document.getElementById('chart-rps');"
            "const d=c.getContext('2d').getImageData(0,0,c.width,c.height).data;"
            "for(let i=3;i<d.length;i+=4){if(d[i]!==0)return true;}return false;")
        shot(driver, "07-traffic")

        # Status.
        driver.find_element(By.ID, "tab-button-status").click()
        until(driver, "the status", lambda d: d.find_element(By.ID, "status-summary").text != "")
        result["status_summary"] = driver.find_element(By.ID, "status-summary").text
        result["status_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#status-body tr"))
        shot(driver, "08-status")

        # Certificates (a placeholder until the HTTPS-from-Redis issue lands).
        driver.find_element(By.ID, "tab-button-certificates").click()
        until(driver, "the certificates tab",
              lambda d: d.find_element(By.ID, "certificates-placeholder").is_displayed())
        result["certificates_text"] = driver.find_element(By.ID, "certificates-placeholder").text
        shot(driver, "09-certificates")

        # Back to the frontends with the dead backend, for the README's picture.
        driver.find_element(By.ID, "tab-button-frontends").click()

        # Log out: the key is gone from the tab.
        driver.find_element(By.ID, "logout").click()
        until(driver, "the login form again", lambda d: d.find_element(By.ID, "key").is_displayed())
        result["key_after_logout"] = driver.execute_script(
            "return sessionStorage.getItem('hipache-tpc-admin-key');")

        # Anything the Content-Security-Policy blocked, and script errors, show in the console log.
        result["browser_errors"] = [
            e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"
            # The API's refusals the script provoked (the wrong key's 401, the duplicate's 400) are
            # logged by Chromium as failed resource loads: expected, and nothing else is.
            and not ("Failed to load resource" in e["message"]
                     and ("status of 401" in e["message"] or "status of 400" in e["message"]))
        ]
        result["seconds"] = round(time.time() - t0, 2)
        say("RESULT " + json.dumps(result))
    except Exception as e:  # noqa: BLE001 - reported to the Rust test
        say(f"FAIL {type(e).__name__}: {e}")
        sys.exit(1)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
