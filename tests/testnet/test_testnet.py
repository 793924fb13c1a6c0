"""A 4-validator network of real `tessera run` processes on 127.0.0.1: consensus over libp2p,
RocksDB, JSON-RPC. One module-wide network goes through the faults in order:

1. transactions sent to any node finalize on all four, with identical receipts and roots;
2. kill -9 one validator under load: the other three keep finalizing;
3. restart it: it catches up to the same head and root;
4. stop two: finality halts, without divergence;
5. restart one: progress resumes;
6. a node started with a different genesis is refused by the others.

The binary is $TESSERA_BIN (see tests/rpc/rpc_helpers.py); these tests never build it.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rpc"))
from rpc_helpers import (  # noqa: E402
    GWEI,
    _die_with_parent,
    dev_account,
    rpc_result,
    sign,
    tessera_bin,
)

N = 4
BLOCK_TIME_MS = 300
VIEW_TIMEOUT_MS = 1500


def ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_base_port(count: int) -> int:
    """A base port with `count` consecutive free ports above it (checked, not reserved), below
    the ephemeral range: a validator killed and started again must find its port free, and
    one in the ephemeral range may meanwhile be the local end of another node's connection."""
    top = min(ephemeral_low(), 65535) - count
    for _ in range(200):
        base = random.randrange(10000, top)
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


class Validator:
    def __init__(self, home: Path, index: int, rpc_port: int):
        self.home = home
        self.index = index
        self.url = f"http://127.0.0.1:{rpc_port}"
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.log: Path | None = None

    def start(self) -> None:
        self.runs += 1
        self.log = self.home / f"run-{self.runs}.log"
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [tessera_bin(), "run", "--home", str(self.home)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.home.glob("run-*.log"))
        )

    def head(self) -> int | None:
        try:
            return int(rpc_result(self.url, "eth_blockNumber"), 16)
        except (requests.RequestException, RuntimeError, KeyError, ValueError, AssertionError):
            return None

    def block(self, number: int) -> dict:
        return rpc_result(self.url, "eth_getBlockByNumber", [hex(number), False])


def wait_until(what: str, cond, timeout: float, nodes=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    tails = "\n".join(
        f"--- node{v.index} log tail ---\n" + "\n".join(v.log_text().splitlines()[-25:])
        for v in nodes
    )
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


def heads(nodes) -> list[int | None]:
    return [v.head() for v in nodes]


def same_blocks(nodes, upto: int) -> None:
    """Every node has blocks 1..upto with identical hashes and state roots."""
    for n in range(1, upto + 1):
        blocks = [v.block(n) for v in nodes]
        hashes = {b["hash"] for b in blocks}
        roots = {b["stateRoot"] for b in blocks}
        assert len(hashes) == 1 and len(roots) == 1, f"block {n} differs: {blocks}"


class Sender:
    """Sends transfers from one dev account to a rotating set of nodes, tracking its nonce."""

    def __init__(self, account_index: int):
        self.acct = dev_account(account_index)
        self.nonce = None

    def send(self, url: str) -> str:
        if self.nonce is None:
            self.nonce = int(rpc_result(url, "eth_getTransactionCount", [self.acct.address, "pending"]), 16)
        tx = {
            "type": 2,
            "chainId": 31337,
            "nonce": self.nonce,
            "to": "0x" + "11" * 20,
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": 100 * GWEI,
            "maxPriorityFeePerGas": 1 * GWEI,
        }
        raw = sign(self.acct, tx)
        h = rpc_result(url, "eth_sendRawTransaction", ["0x" + raw.hex()])
        self.nonce += 1
        return h


def receipt(v: Validator, tx_hash: str):
    try:
        return rpc_result(v.url, "eth_getTransactionReceipt", [tx_hash])
    except Exception:
        return None


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    out = tmp_path_factory.mktemp("testnet")
    rpc_base = free_base_port(N)
    p2p_base = free_base_port(N)
    subprocess.run(
        [
            tessera_bin(), "testnet", "--validators", str(N), "--shards", "1", "--out", str(out),
            "--rpc-base-port", str(rpc_base), "--p2p-base-port", str(p2p_base),
            "--block-time", str(BLOCK_TIME_MS), "--view-timeout", str(VIEW_TIMEOUT_MS),
        ],
        check=True,
        capture_output=True,
    )
    nodes = [Validator(out / f"node{i}", i, rpc_base + i) for i in range(N)]
    for v in nodes:
        v.start()
    try:
        wait_until("all four validators past block 3", lambda: all((h or 0) >= 3 for h in heads(nodes)), 90, nodes)
        yield nodes
    finally:
        for v in nodes:
            v.kill(signal.SIGTERM)


def test_transactions_to_any_node_finalize_everywhere(net):
    senders = [Sender(i) for i in range(N)]
    hashes = [senders[i].send(net[i].url) for i in range(N) for _ in range(2)]
    wait_until(
        "receipts on all four nodes",
        lambda: all(receipt(v, h) for v in net for h in hashes),
        60,
        net,
    )
    for h in hashes:
        receipts = [receipt(v, h) for v in net]
        assert receipts[0]["status"] == "0x1"
        for r in receipts[1:]:
            assert r == receipts[0], f"receipts differ for {h}: {receipts}"
    top = min(heads(net))
    same_blocks(net, top)


def test_kill_one_under_load_then_restart_catches_up(net):
    stop = threading.Event()
    sent: list[str] = []
    errors: list[Exception] = []

    def load():
        sender = Sender(5)
        i = 0
        while not stop.is_set():
            try:
                sent.append(sender.send(net[i % 3].url))
            except Exception as e:  # a node busy or in flux: retry later
                errors.append(e)
                sender.nonce = None
            i += 1
            time.sleep(0.05)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        time.sleep(2)
        net[3].kill(signal.SIGKILL)
        before = heads(net[:3])
        wait_until(
            "three validators to finalize 5 more blocks without the fourth",
            lambda: all((h or 0) >= (b or 0) + 5 for h, b in zip(heads(net[:3]), before)),
            60,
            net[:3],
        )
    finally:
        stop.set()
        t.join(timeout=10)
    assert len(sent) > 10, f"load generator sent only {len(sent)} (errors: {errors[:3]})"
    wait_until("the load's transactions to finalize", lambda: receipt(net[0], sent[-1]) is not None, 60, net[:3])

    net[3].start()
    target = max(h or 0 for h in heads(net[:3]))
    wait_until("the restarted validator to catch up", lambda: (net[3].head() or 0) >= target, 90, net)
    same_blocks(net, target)
    assert receipt(net[3], sent[-1]) == receipt(net[0], sent[-1])


def test_two_down_halts_without_divergence_and_one_back_resumes(net):
    net[2].kill(signal.SIGKILL)
    net[3].kill(signal.SIGKILL)
    time.sleep(VIEW_TIMEOUT_MS / 1000 * 2)
    stalled = heads(net[:2])
    time.sleep(6)
    assert heads(net[:2]) == stalled, "two of four validators must not finalize anything"
    same_blocks(net[:2], min(stalled))
    assert all(v.alive() for v in net[:2])

    net[2].start()
    wait_until(
        "progress after one validator returns",
        lambda: all((h or 0) >= max(stalled) + 3 for h in heads(net[:3])),
        120,
        net[:3],
    )
    same_blocks(net[:3], min(heads(net[:3])))
    net[3].start()
    wait_until("the fourth to catch up", lambda: (net[3].head() or 0) >= max(stalled) + 3, 90, net)


def test_a_node_with_another_genesis_is_refused(net, tmp_path):
    other = tmp_path / "other"
    p2p = free_base_port(1)
    rpc_port = free_base_port(1)
    subprocess.run(
        [
            tessera_bin(), "testnet", "--validators", "1", "--out", str(other),
            "--rpc-base-port", str(rpc_port), "--p2p-base-port", str(p2p),
            "--chain-id", "31337", "--block-time", str(BLOCK_TIME_MS),
        ],
        check=True,
        capture_output=True,
    )
    home = other / "node0"
    config = (home / "node.toml").read_text()
    # Point the stranger at the network's nodes.
    boot = [line for line in (net[0].home / "node.toml").read_text().splitlines() if "/p2p/" in line]
    config = config.replace("bootnodes = []", "bootnodes = [\n" + "\n".join(boot) + "\n]")
    (home / "node.toml").write_text(config)
    stranger = Validator(home, 9, rpc_port)
    stranger.start()
    try:
        before = heads(net)
        wait_until(
            "the network to keep finalizing with the stranger around",
            lambda: all((h or 0) >= (b or 0) + 5 for h, b in zip(heads(net), before)),
            60,
            net,
        )
        wait_until(
            "a validator to reject the stranger's consensus messages",
            lambda: any("rejected a consensus message" in v.log_text() for v in net),
            30,
            net + [stranger],
        )
        top = min(heads(net))
        same_blocks(net, top)
        # The stranger never adopted the network's blocks.
        own = stranger.block(1) if (stranger.head() or 0) >= 1 else None
        assert own is None or own["hash"] != net[0].block(1)["hash"]
    finally:
        stranger.kill(signal.SIGTERM)
