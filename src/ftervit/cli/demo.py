"""``ftervit demo FILE``: a local web page, an image in, the C engine's classes and attention map out."""
from __future__ import annotations

import argparse
import socket

from ftervit.cli.common import positive_int
from ftervit.errors import FtervitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="web page: classify an image with the C engine, show its attention",
        description="Serve a self-contained page (choose, drop or paste an image, or take a webcam frame) that "
                    "shows the .ftv FILE's top classes and the attention-rollout map, both from the C engine, and "
                    "a JSON API: GET /api/info, POST /api/classify (multipart field 'image'). Needs the demo "
                    "extra: pip install 'ftervit[demo]'.")
    p.add_argument("file", metavar="FILE", help=".ftv model file (ftervit export)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--threads", type=positive_int, default=1, help="engine threads")
    p.add_argument("-k", "--top", type=positive_int, default=5, help="classes per answer (default 5)")
    p.add_argument("--max-bytes", type=positive_int, default=10_000_000,
                   help="largest accepted upload in bytes (default 10000000); larger ones get 413")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise FtervitError(f"--port {args.port}: expected 0-65535")
    try:
        import uvicorn

        from ftervit.demo.server import create_app
    except ImportError as exc:
        raise FtervitError(f"the demo needs the demo extra ({exc.name} is missing): "
                           "pip install 'ftervit[demo]' (fastapi, uvicorn, python-multipart)") from None
    import torch

    from ftervit.engine import Engine

    # The image transforms' few tensor ops gain nothing from threads, and idle OpenMP threads
    # spin on the cores the engine's pass needs right after them (measured: twice the time).
    torch.set_num_threads(1)
    engine = Engine(args.file, threads=args.threads)
    app = create_app(engine, top_k=args.top, max_bytes=args.max_bytes, file_name=args.file)
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    print(f"ftervit demo: {args.file} on the C engine ({engine.kernels}, {engine.threads} thread"
          f"{'s' if engine.threads > 1 else ''}) at http://{f'[{host}]' if ':' in host else host}:{port}/ "
          "(Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
    # Only a signal stops the server. uvicorn re-raises it after its graceful shutdown, which should end
    # in KeyboardInterrupt; once, under load, the process exited 0 instead (test_page_in_chromium's
    # teardown, cause not found): the exit code does not depend on that re-raise.
    if server.should_exit:
        raise KeyboardInterrupt
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), so the URL printed is the one served."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise FtervitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
