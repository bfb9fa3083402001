"""The app and settings a request is served with, as stored on the Starlette app by `create_server`."""

from __future__ import annotations

from typing import cast

from starlette.requests import HTTPConnection

from flowapp.app import FlowApp
from flowapp.settings import ServerSettings


def flow_app(conn: HTTPConnection) -> FlowApp:
    return cast(FlowApp, conn.app.state.flowapp)


def server_settings(conn: HTTPConnection) -> ServerSettings:
    return cast(ServerSettings, conn.app.state.settings)
