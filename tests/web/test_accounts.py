"""Accounts on the chat page (docs/web.md): register a nick from the login form, log in
with its password, the errors next to the form, and a login again after a reconnect
with the password the page holds in memory only."""

from __future__ import annotations

import re

import pytest
from selenium.webdriver.common.by import By

from tests.web.conftest import WebServer, free_port, missing_browser
from tests.web.test_browser import Page

if (_why := missing_browser()) is not None:
    pytest.skip(_why, allow_module_level=True)

PASSWORD = "page pass 1"


@pytest.fixture
def pages(fresh_drivers, web_server) -> list[Page]:
    return [Page(driver, web_server.url) for driver in fresh_drivers]


def login_error(page: Page) -> str:
    return page.driver.find_element(By.ID, "login-error").text


def back_to_the_form(page: Page) -> None:
    """/quit: the login form shows again."""
    page.type("/quit")
    page.wait_for(lambda: page.driver.find_element(By.ID, "login").is_displayed(), "the login form")


def code(reply: dict) -> str:
    assert reply["op"] == "error", reply
    return reply["code"]


def test_register_from_the_page_then_log_in_with_the_password(pages, web_server):
    ann, guest = pages
    ann.open("regann", room="accounts", password=PASSWORD, register=True)
    ann.wait_for(lambda: any(line.startswith("registered regann") for line in ann.lines(".notice")),
                 "the registration notice")
    # The password is in the page's memory only: not in the form, not in storage.
    assert ann.driver.find_element(By.ID, "password").get_attribute("value") == ""
    assert PASSWORD not in ann.js("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    tcp = web_server.client()
    assert code(tcp.request("hello", nick="RegAnn")) == "account_required"

    # A guest cannot take the registered nick, on the page either.
    guest.open("regann", room="accounts", connected=False)
    guest.wait_for(lambda: "regann is a registered nick" in login_error(guest), "the refusal")
    assert guest.state() == "offline"

    # Log out, reload: a wrong password is refused next to the form, the right one logs in.
    back_to_the_form(ann)
    ann.open("regann", room="accounts", password="not it", connected=False)
    ann.wait_for(lambda: login_error(ann) == "wrong password for regann", "the wrong password")
    assert ann.driver.find_element(By.ID, "login").is_displayed() and ann.state() == "offline"
    ann.open("regann", room="accounts", password=PASSWORD, load=False)
    assert "logged in as regann" in ann.lines(".notice")
    ann.say("accounts", "it is me")

    # Registering a nick that is an account already says so.
    guest.open("regann", room="accounts", password="another one", register=True, connected=False)
    guest.wait_for(lambda: "regann is registered already" in login_error(guest), "account_exists")


def test_registration_errors_show_next_to_the_form(pages, web_server):
    page = pages[0]
    page.open("shorty", room="accounts", password="short", register=True, connected=False)
    page.wait_for(lambda: login_error(page).startswith("too weak a password: a password needs at "
                                                       "least 8 characters"), "weak_password")
    page.open("shorty", room="accounts", register=True, connected=False, load=False)
    page.wait_for(lambda: login_error(page) == "choose a password to register the nick with",
                  "the missing password")
    # The nick was not kept by the refused registration: a guest may still have it.
    page.open("shorty", room="accounts", load=False)


def test_a_closed_server_hides_the_register_choice(fresh_drivers, tmp_path):
    server = WebServer(free_port(), tmp_path / "closed.db", "--registration", "closed")
    try:
        page = Page(fresh_drivers[0], server.url)
        page.open("hopeful", room="closed", password=PASSWORD, register=True, connected=False)
        page.wait_for(lambda: "does not let users register" in login_error(page), "registration_closed")
        # The page has learnt it from hello: the choice is gone, a guest can connect.
        assert not page.driver.find_element(By.ID, "register-choice").is_displayed()
        page.open("hopeful", room="closed", load=False)
        assert page.status() == "connected as hopeful"
    finally:
        server.kill()


def test_the_page_logs_in_again_after_a_restart(fresh_drivers, tmp_path):
    http_port, store = free_port(), tmp_path / "again.db"
    first = WebServer(http_port, store)
    second: WebServer | None = None
    try:
        page = Page(fresh_drivers[0], first.url)
        page.open("comeback", room="again", password=PASSWORD, register=True)
        assert first.stop() == 0
        page.wait_for(lambda: page.state() == "disconnected", "the lost connection")
        second = WebServer(http_port, store)
        # Only a login gets the nick back: a guest hello is account_required, and the page
        # would stop at the login form.
        page.wait_for(lambda: page.state() == "connected", "connected again", timeout=15)
        assert page.status() == "connected as comeback"
        tcp = second.client()
        assert code(tcp.request("hello", nick="comeback", password=PASSWORD)) == "nick_taken"
        page.say("again", "back, logged in")
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_too_many_wrong_passwords_say_how_long_to_wait(pages, web_server):
    owner = web_server.client()
    owner.hello("guarded", proto=2)
    assert owner.request("register", password=PASSWORD)["op"] == "ok"
    owner.request("quit")
    page = pages[0]
    page.driver.get(page.url)
    for attempt in range(5):  # the account's burst of failures (gchat/server/accounts.py)
        page.open("guarded", room="accounts", password=f"guess {attempt}", connected=False, load=False)
        page.wait_for(lambda: login_error(page) == "wrong password for guarded"
                      and not page.driver.find_element(By.ID, "connect").get_attribute("disabled"),
                      f"wrong guess {attempt}")
        page.js("document.getElementById('login-error').textContent = ''")
    page.open("guarded", room="accounts", password=PASSWORD, connected=False, load=False)
    page.wait_for(lambda: re.fullmatch(r"too many failed logins; try again in \d+ s", login_error(page)),
                  "too_many_attempts")
