"""A Django project as `django-admin startproject` makes it, with the admin and sqlite."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import child_env
from harness import COMPAT_APPS, Observed, both, compare, observe, reply_from_httpx

PASSWORD = "Compat-Pass-8317"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("django")
    run = [sys.executable, "-m", "django"]
    subprocess.run([*run, "startproject", "compatsite", str(root)], check=True, timeout=60)
    shutil.copy(COMPAT_APPS / "django_extra" / "compat_views.py", root / "compat_views.py")
    settings = root / "compatsite" / "settings.py"
    settings.write_text(
        settings.read_text()
        + "\nimport os\nDEBUG = False\nALLOWED_HOSTS = ['*']\n"
        + "DATABASES['default']['NAME'] = os.environ['COMPAT_DB']\n"
    )
    urls = root / "compatsite" / "urls.py"
    urls.write_text(
        urls.read_text().replace(
            "from django.urls import path", "from django.urls import include, path"
        )
        + "\nurlpatterns.append(path('', include('compat_views')))\n"
    )
    env = child_env({"COMPAT_DB": str(root / "db.sqlite3"), "DJANGO_SUPERUSER_PASSWORD": PASSWORD})
    manage = [sys.executable, str(root / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], check=True, env=env, timeout=120, cwd=root)
    subprocess.run(
        [
            *manage,
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
        ],
        check=True,
        env=env,
        timeout=60,
        cwd=root,
        capture_output=True,
    )
    return root


@pytest.fixture(scope="module")
def servers(project):
    # One database copy per server, so that sessions written by one are not seen by the other.
    for name in ("rsgi", "uvicorn"):
        shutil.copy(project / "db.sqlite3", project / f"{name}.sqlite3")
    with both(
        "compatsite.asgi:application",
        app_dir=project,
        env_for=lambda name: {"COMPAT_DB": str(project / f"{name}.sqlite3")},
    ) as servers:
        yield servers


TOKEN_RE = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]+"')


def mask_cookies(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Cookie values and expiry dates are random or time-based; keep names and flags."""
    masked = []
    for name, value in headers:
        if name == "expires":  # Django's never_cache: the time of the response
            value = "<date>"
        if name == "set-cookie":
            value = re.sub(r"^([^=]+)=[^;]*", r"\1=<value>", value)
            value = re.sub(r"(?i)expires=[^;]+", "expires=<date>", value)
        masked.append((name, value))
    return masked


def reply(resp) -> object:
    result = reply_from_httpx(resp, lambda body: TOKEN_RE.sub(b"<csrf token>", body))
    result.headers = mask_cookies(result.headers)
    return result


@pytest.mark.timeout(60)
def test_admin_login_and_csrf(servers):
    def scenario(server, seen: Observed) -> None:
        with httpx.Client(base_url=server.base_url, timeout=15) as http:
            page = http.get("/admin/login/?next=/admin/")
            seen.replies.append(reply(page))
            token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
            form = {"username": "admin", "password": "wrong", "next": "/admin/"}
            # Without the token (the cookie is sent): 403.
            seen.replies.append(reply(http.post("/admin/login/?next=/admin/", data=form)))
            form["csrfmiddlewaretoken"] = token.group(1).decode()
            seen.replies.append(reply(http.post("/admin/login/?next=/admin/", data=form)))
            form["password"] = PASSWORD
            seen.replies.append(reply(http.post("/admin/login/?next=/admin/", data=form)))
            seen.replies.append(reply(http.get("/admin/")))
        seen.effects["statuses"] = [r.status for r in seen.replies]

    observed = observe(servers, scenario)
    assert observed["uvicorn"].effects["statuses"] == [200, 403, 200, 302, 200]
    compare(observed)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/sync/?q=x", "/async/", "/static/nope.css", "/nope/"])
def test_views_and_404(servers, path):
    def scenario(server, seen: Observed) -> None:
        seen.replies.append(reply(httpx.get(server.base_url + path, timeout=15)))

    compare(observe(servers, scenario))


@pytest.mark.timeout(120)
def test_3000_sync_requests_no_leak(servers):
    """Sync views run in threads; 3,000 of them must not grow rsgi beyond uvicorn."""

    def load(server, count: int) -> list[int]:
        statuses: list[int] = []

        def client() -> None:
            with httpx.Client(base_url=server.base_url, timeout=15) as http:
                for _ in range(count // 4):
                    statuses.append(http.get("/sync/").status_code)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(100)
        return statuses

    rss = {}

    def scenario(server, seen: Observed) -> None:
        load(server, 200)  # warm up
        before = server.rss_kib()
        statuses = load(server, 3000)
        after = server.rss_kib()
        rss[seen.name] = (before, after)
        seen.effects = {"ok": statuses.count(200), "count": len(statuses)}

    observed = observe(servers, scenario)
    assert observed["uvicorn"].effects == {"ok": 3000, "count": 3000}
    compare(observed, access_key=lambda line: line)
    (rb, ra), (ub, ua) = rss["rsgi"], rss["uvicorn"]
    assert ra <= ua + 8 * 1024 and ra - rb <= max(ua - ub, 0) + 4 * 1024, (
        f"RSS KiB before/after 3,000 requests: rsgi {rb}/{ra}, uvicorn {ub}/{ua}"
    )
