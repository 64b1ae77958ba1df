"""python -m gateway: serves HTTP on GATEWAY_PORT (8080) for the backends at AUTH_ADDR, BOOKS_ADDR, ..."""

import logging

import uvloop
from aiohttp import web

from gateway.app import build_app
from gateway.config import GatewayConfig
from kernel import logs


def main() -> None:
    config = GatewayConfig.from_env()
    logs.configure("gateway", config.log_level)
    # handler_cancellation: a client that hangs up cancels its handler, and with it the gRPC call.
    url = f"http://{config.host}:{config.port}"
    web.run_app(
        build_app(config),
        host=config.host,
        port=config.port,
        access_log=None,
        handler_cancellation=True,
        loop=uvloop.new_event_loop(),  # cheaper per request than asyncio's own loop, as in the services
        print=lambda _: logging.getLogger("gateway").info("serving", extra={"fields": {"url": url}}),
    )


if __name__ == "__main__":
    main()
