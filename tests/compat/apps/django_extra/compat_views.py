"""Views added to the startproject-generated Django project (copied into it by the test)."""

from __future__ import annotations

import threading

from django.http import JsonResponse
from django.urls import path

hits = {"sync": 0}


def sync_view(request):
    hits["sync"] += 1
    return JsonResponse(
        {
            "method": request.method,
            "q": request.GET.get("q", ""),
            "in_thread": threading.current_thread() is not threading.main_thread(),
        }
    )


async def async_view(request):
    return JsonResponse({"async": True, "path": request.path})


def hit_count(request):
    return JsonResponse(hits)


urlpatterns = [
    path("sync/", sync_view),
    path("async/", async_view),
    path("hits/", hit_count),
]
