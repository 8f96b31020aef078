"""Run inside the box's netns (tests/support/captive_rig.py Box): conjuringd's network adapter, as
the daemon builds it (CaptiveNetwork around NetworkManagerAdapter), activates the serve connection
and then serves port 80 until stdin closes. Prints one JSON line once it is up.

    python -m tests.support.captive_box BUS_ADDRESS DROPIN_DIR SERVE HUB_PORT [off]

"off": [network] captive_portal = false.
"""

from __future__ import annotations

import asyncio
import json
import sys

from conjuringd import logs
from conjuringd.adapters.captive import CaptiveNetwork
from conjuringd.adapters.captive_dns import DropIn
from conjuringd.adapters.nm import NetworkManagerAdapter
from conjuringd.config.model import NetworkSettings


async def main(bus: str, dropins: str, serve: str, hub_port: int, portal: bool) -> None:
    network = CaptiveNetwork(NetworkManagerAdapter(bus, activation_timeout=30), lambda: hub_port,
                             dropin=DropIn(dropins))
    await network.start(lambda reason: None)
    spec = NetworkSettings(serve=serve, captive_portal=portal)
    await network.activate_serve(spec)
    observed = await network.observe(spec)
    print(json.dumps({"state": observed.state, "addresses": list(observed.addresses), "http": network.http.address}),
          flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(json.dumps({"served": network.http.served}), file=sys.stderr, flush=True)
    await network.close()


if __name__ == "__main__":
    logs.configure("json", "info", stream=sys.stderr)
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:] != ["off"]))
