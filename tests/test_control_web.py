"""The live control web page in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium): it loads, shows the meters, and a click changes a
value that the master (pymeterbus over TCP) then reads. Leaves a screenshot in
/tmp/control-page.png."""
import os
import shutil
import tempfile

import pytest

from mbus_ports.testing import SlaveProcess
from tests.hostutil import req_ud2, values, ping, SILENCE_TIMEOUT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = "/tmp/control-page.png"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser():
    profile = tempfile.mkdtemp(prefix="mbus-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run",
              "--user-data-dir=" + profile, "--window-size=1100,900"):
        opts.add_argument(a)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    drv = webdriver.Chrome(options=opts, service=service)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(drv, cond, timeout=20):
    return WebDriverWait(drv, timeout, poll_frequency=0.1).until(lambda d: cond(d))


def _card(drv, address):
    return drv.find_element(By.CSS_SELECTOR, '.card[data-address="%d"]' % address)


def test_the_page_shows_the_meters_and_a_click_changes_what_the_master_reads(browser,
                                                                             tmp_path):
    with SlaveProcess("--random-meters", "2", "--seed", "3", tcp=True) as s:
        browser.get(s.url + "/")
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == 2)
        assert "mbus-slave" in browser.title
        first = _card(browser, 1)
        rows = first.find_elements(By.CSS_SELECTOR, "tbody tr")
        api = s.meter(1)
        assert len(rows) == len(api["records"])
        assert api["id"] in first.find_element(By.CSS_SELECTOR, ".ident").text
        # type a value into record 1 (volume flow, 0.1 m3/h resolution) and click Set
        row = first.find_element(By.CSS_SELECTOR, 'tr[data-index="1"]')
        row.find_element(By.CSS_SELECTOR, ".set-input").send_keys("0.7")
        row.find_element(By.CSS_SELECTOR, ".set-btn").click()
        _wait(browser, lambda d: s.value(1, 1) == 0.7)
        _wait(browser, lambda d: _card(d, 1).find_element(
            By.CSS_SELECTOR, 'tr[data-index="1"] .value').text.startswith("0.7 "))
        with s.serial() as ser:
            t, _ = req_ud2(ser, 1)
            assert float(values(t)[1]) == pytest.approx(0.7)   # pymeterbus: Decimal
            # the alarm button: ACD in the next reply
            _card(browser, 1).find_element(By.CSS_SELECTOR, ".btn-alarm").click()
            _wait(browser, lambda d: s.meter(1)["alarm"])
            assert req_ud2(ser, 1)[1][4] & 0x20
            # unplug meter 2 with its button: silent to the master
            _card(browser, 2).find_element(By.CSS_SELECTOR, ".btn-plug").click()
            _wait(browser, lambda d: s.meter(2)["present"] is False)
            assert not ping(ser, 2, timeout=SILENCE_TIMEOUT)
            # the fault switch: meter 1's replies dropped
            _card(browser, 1).find_element(By.CSS_SELECTOR, ".fault-on").click()
            _wait(browser, lambda d: s.meter(1)["faults"])
            assert not ping(ser, 1, timeout=SILENCE_TIMEOUT)
        # the trace shows the frames
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#trace li")) >= 2)
        assert "REQ_UD2 to 1" in browser.find_element(By.ID, "trace").text
        _wait(browser, lambda d: "unplugged" in _card(d, 2).text)
        browser.save_screenshot(SCREENSHOT)
    assert os.path.getsize(SCREENSHOT) > 10000


def test_the_page_fits_a_phone(browser):
    with SlaveProcess("--random-meters", "3", "--seed", "3") as s:
        browser.set_window_size(390, 844)
        browser.get(s.url + "/")
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == 3)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        inner = browser.execute_script("return window.innerWidth")
        assert width <= inner, "the page scrolls sideways on a phone"
