"""Network figures on a real NetworkManager (ethernet stand-in for the hotspot). Run as root:

    .venv/bin/python tests/bench/network.py [rounds]

Prints, for `rounds` rounds: the time from "config wants serve" (observe says inactive,
activate_serve called) to the adapter seeing ACTIVATED by signal; and the D-Bus method calls
made by an idle observe() (target: zero) and by the first observe() after a change.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from conjuringd.adapters.nm import NetworkManagerAdapter  # noqa: E402
from conjuringd.config.model import NetworkSettings  # noqa: E402
from tests.support.nm import NMClient, PrivateSystemBus, RealNetworkManager, ethernet_settings  # noqa: E402

SPEC = NetworkSettings(serve="serve")


async def settle(adapter: NetworkManagerAdapter, quiet: float = 0.3) -> None:
    while True:
        before = adapter.calls
        await asyncio.sleep(quiet)
        await adapter.observe(SPEC)
        if adapter.calls == before:
            return


async def bench(address: str, rounds: int) -> None:
    async with NMClient(address) as client:
        await client.add_connection(ethernet_settings("serve", str(uuid.uuid4()), "veth1", "10.77.0.1"))
        adapter = NetworkManagerAdapter(address)
        wakes: list[str] = []
        await adapter.start(wakes.append)
        to_activated, idle_calls, changed_calls = [], [], []
        for _ in range(rounds):
            started = time.perf_counter()
            observed = await adapter.observe(SPEC)
            assert observed.state == "inactive", observed
            await adapter.activate_serve(SPEC)
            to_activated.append((time.perf_counter() - started) * 1000)
            await settle(adapter)
            before = adapter.calls
            for _ in range(100):
                await adapter.observe(SPEC)
            idle_calls.append((adapter.calls - before) / 100)
            await client.deactivate("serve")
            while (await adapter.observe(SPEC)).state != "inactive":
                await asyncio.sleep(0.01)
            await settle(adapter)
            before = adapter.calls
            noise = await client.add_connection(ethernet_settings("noise", str(uuid.uuid4()), "veth0", "10.79.0.1"),
                                                False)
            await asyncio.sleep(0.2)
            await adapter.observe(SPEC)
            changed_calls.append(adapter.calls - before)
            await client.delete(noise)
            await settle(adapter)
        await adapter.close()
    print(f"rounds: {rounds}")
    print(f"config wants serve -> ACTIVATED (ms): median {statistics.median(to_activated):.1f}, "
          f"min {min(to_activated):.1f}, max {max(to_activated):.1f}")
    print(f"D-Bus calls per idle observe(): {max(idle_calls):.2f} (max over rounds)")
    print(f"D-Bus calls for the first observe() after a connection was added: median "
          f"{statistics.median(changed_calls)}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory(prefix="nm-bench-") as workdir:
        bus = PrivateSystemBus(Path(workdir)).start()
        nm = RealNetworkManager(bus, Path(workdir))
        try:
            nm.start()
            asyncio.run(bench(bus.address, rounds))
        finally:
            nm.stop()
            bus.stop()


if __name__ == "__main__":
    main()
