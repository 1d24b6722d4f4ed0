#!/usr/bin/env python3
"""Start moto's server with the moto_ext patches: python tests/stack/moto_server.py --port P

Listens on 127.0.0.1 (use --port 0 for a free port: the first line printed names it).
Stops on SIGTERM or SIGINT.
"""

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    from moto_ext import make_app, state

    server = make_server(args.host, args.port, make_app(), threaded=True,
                         request_handler=MotoRequestHandler)
    port = server.server_address[1]
    os.environ.setdefault("MOTO_PORT", str(port))  # some moto services build URLs from it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"moto_ext listening on http://{args.host}:{port} (AMI_SIM_POLLS={state.POLLS})",
          flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
