"""One router per resource; :data:`ROUTERS` is what the app mounts."""

from __future__ import annotations

from serving.routes import admin, events, health, items, preview, recommendations, search

ROUTERS = (
    recommendations.router,
    search.router,
    items.router,
    events.router,
    health.router,
    admin.router,
    preview.router,
)
