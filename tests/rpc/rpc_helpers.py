"""Shared helpers for the real-client RPC tests: running `tessera dev`, raw JSON-RPC,
dev accounts, signing and sending transactions, the test token."""

from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
import rlp
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import Web3

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = Path(__file__).resolve().parent / "contracts"

CHAIN_ID = 31337
GWEI = 10**9
ETHER = 10**18
DEV_BALANCE = 10_000 * ETHER
BLOCK_GAS_LIMIT = 30_000_000
BASE_FEE_FLOOR = 1 * GWEI
BLOCK_TIME_MS = 200
MNEMONIC = "test test test test test test test test test test test junk"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

HTTP_TIMEOUT = 15  # seconds, for every single HTTP request
READY_TIMEOUT = 30  # seconds, for a node to answer eth_chainId
RECEIPT_TIMEOUT = 30  # seconds, for a sent transaction to be mined

Account.enable_unaudited_hdwallet_features()


# --------------------------------------------------------------------------- node


def tessera_bin() -> str:
    """The node binary: $TESSERA_BIN, else ${CARGO_TARGET_DIR:-target}/debug/tessera
    relative to the repository root."""
    b = os.environ.get("TESSERA_BIN")
    if not b:
        b = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "tessera")
    if not os.path.isabs(b):
        b = str(REPO / b)
    return b


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """preexec_fn: the node gets SIGTERM if the test process dies, so nothing is left behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class NodeDied(RuntimeError):
    pass


class Node:
    """One `tessera dev` process. Logs go to files in `workdir` (no pipes that could fill up)."""

    def __init__(
        self,
        workdir: Path,
        block_time_ms: int = BLOCK_TIME_MS,
        data_dir: Path | None = None,
        name: str = "node",
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.block_time_ms = block_time_ms
        self.data_dir = data_dir
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.runs = 0
        self.stdout_path: Path | None = None
        self.stderr_path: Path | None = None

    # -- addresses
    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def web3(self) -> Web3:
        return Web3(Web3.HTTPProvider(self.http_url, request_kwargs={"timeout": HTTP_TIMEOUT}))

    # -- lifecycle
    def start(self) -> "Node":
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        binary = tessera_bin()
        if not os.access(binary, os.X_OK):
            raise FileNotFoundError(
                f"tessera binary not found or not executable: {binary} "
                "(build it first, or set TESSERA_BIN)"
            )
        self.runs += 1
        self.port = free_port()
        self.stdout_path = self.workdir / f"{self.name}-{self.runs}.stdout"
        self.stderr_path = self.workdir / f"{self.name}-{self.runs}.stderr"
        cmd = [binary, "dev", "--block-time", str(self.block_time_ms), "--port", str(self.port)]
        if self.data_dir is not None:
            cmd += ["--data-dir", str(self.data_dir)]
        self.cmd = cmd
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=str(self.workdir),
                preexec_fn=_die_with_parent,
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NodeDied(
                    f"{' '.join(self.cmd)} exited with code {self.proc.returncode} before "
                    f"answering eth_chainId.\n--- stderr tail ---\n{self.stderr_tail()}"
                )
            try:
                r = requests.post(
                    self.http_url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                    timeout=2,
                )
                if r.status_code == 200 and r.json().get("result") is not None:
                    return
            except (requests.RequestException, ValueError) as e:
                last_err = e
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise TimeoutError(
            f"node did not answer eth_chainId within {timeout}s (last error: {last_err}).\n"
            f"--- stderr tail ---\n{self.stderr_tail()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """Send `sig`, wait up to `timeout` s, then SIGKILL. Returns the exit code the process
        had after `sig` (None if it had to be killed after the timeout)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path else ""

    def stderr_tail(self, lines: int = 40) -> str:
        if not self.stderr_path or not self.stderr_path.exists():
            return ""
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------- raw JSON-RPC


def rpc_raw(url: str, body: Any, timeout: float = HTTP_TIMEOUT) -> Any:
    """POST `body` (a str/bytes sent as is, anything else as JSON); return the parsed reply."""
    if isinstance(body, (str, bytes)):
        data = body.encode() if isinstance(body, str) else body
    else:
        data = json.dumps(body).encode()
    r = requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=timeout)
    try:
        return r.json()
    except ValueError:
        raise AssertionError(f"reply is not JSON (HTTP {r.status_code}): {r.text[:500]!r}")


def rpc(url: str, method: str, params: list | None = None, id: int = 1) -> dict:
    """One JSON-RPC call; returns the whole reply object (with `result` or `error`)."""
    reply = rpc_raw(url, {"jsonrpc": "2.0", "id": id, "method": method, "params": params or []})
    assert isinstance(reply, dict), f"{method}: reply is not an object: {reply!r}"
    assert reply.get("jsonrpc") == "2.0", reply
    assert reply.get("id") == id, reply
    return reply


def rpc_result(url: str, method: str, params: list | None = None) -> Any:
    reply = rpc(url, method, params)
    assert "error" not in reply, f"{method}{params!r} failed: {reply['error']}"
    assert "result" in reply, reply
    return reply["result"]


def rpc_error(url: str, method: str, params: list | None = None) -> dict:
    reply = rpc(url, method, params)
    assert "error" in reply, f"{method} should have failed but returned {str(reply)[:300]}"
    err = reply["error"]
    assert isinstance(err.get("code"), int) and isinstance(err.get("message"), str), err
    return err


# --------------------------------------------------------------------------- accounts


@functools.lru_cache(maxsize=None)
def dev_account(i: int):
    """Account m/44'/60'/0'/0/i of the dev mnemonic."""
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")


def fresh_address() -> str:
    """A random address no one has touched (for exact 'recipient gained' checks)."""
    return Account.create().address


def pad_address(addr: str) -> str:
    """An address as a 32-byte topic."""
    return "0x" + "00" * 12 + addr[2:].lower()


def create_address(sender: str, nonce: int) -> str:
    return to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:])


# --------------------------------------------------------------------------- transactions


def base_fee(w3: Web3, block: Any = "latest") -> int:
    return w3.eth.get_block(block)["baseFeePerGas"]


def eip1559_fees(w3: Web3, tip: int = 1 * GWEI) -> dict:
    """Fees that are sure to be included soon: maxFee = 2 * current base fee + tip."""
    return {"maxFeePerGas": 2 * base_fee(w3) + tip, "maxPriorityFeePerGas": tip}


def sign(acct, tx: dict) -> bytes:
    tx = dict(tx)
    tx.setdefault("chainId", CHAIN_ID)
    return bytes(acct.sign_transaction(tx).raw_transaction)


def send_tx(w3: Web3, acct, tx: dict) -> str:
    """Fill in nonce/chainId/fees when missing, sign, eth_sendRawTransaction; returns the hash."""
    tx = dict(tx)
    tx.setdefault("nonce", w3.eth.get_transaction_count(acct.address, "pending"))
    tx.setdefault("chainId", CHAIN_ID)
    if "gasPrice" not in tx and "maxFeePerGas" not in tx:
        tx.update(eip1559_fees(w3))
    tx.setdefault("value", 0)
    raw = sign(acct, tx)
    h = w3.eth.send_raw_transaction(raw)
    assert bytes(h) == keccak(raw), "eth_sendRawTransaction must return the keccak of the raw tx"
    return "0x" + bytes(h).hex()


def wait_receipt(w3: Web3, tx_hash: str, timeout: float = RECEIPT_TIMEOUT):
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)


def send_and_wait(w3: Web3, acct, tx: dict, timeout: float = RECEIPT_TIMEOUT):
    return wait_receipt(w3, send_tx(w3, acct, tx), timeout)


def wait_for_block(w3: Web3, number: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = w3.eth.block_number
        if n >= number:
            return n
        time.sleep(0.05)
    raise TimeoutError(f"block {number} not reached in {timeout}s (head {w3.eth.block_number})")


# --------------------------------------------------------------------------- token


@functools.lru_cache(maxsize=None)
def token_artifacts() -> dict:
    import vyper

    src = (CONTRACTS / "Token.vy").read_text()
    out = vyper.compile_code(src, output_formats=["abi", "bytecode", "bytecode_runtime", "layout"])
    return {
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "runtime": out["bytecode_runtime"],
        "layout": out["layout"]["storage_layout"],
    }


TOKEN_NAME = "Tessera Test Token"
TOKEN_SYMBOL = "TTT"
TOKEN_DECIMALS = 18
TOKEN_SUPPLY = 1_000_000 * 10**18
DEPLOY_GAS = 3_000_000


def token_contract(w3: Web3, address: str | None = None):
    art = token_artifacts()
    if address is None:
        return w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    return w3.eth.contract(address=to_checksum_address(address), abi=art["abi"])


def deploy_data() -> str:
    art = token_artifacts()
    args = abi_encode(
        ["string", "string", "uint8", "uint256"],
        [TOKEN_NAME, TOKEN_SYMBOL, TOKEN_DECIMALS, TOKEN_SUPPLY],
    )
    return art["bytecode"] + args.hex()


def deploy_token(w3: Web3, acct):
    """Deploys the token with a signed raw transaction; returns (contract, receipt, tx_hash)."""
    h = send_tx(w3, acct, {"data": deploy_data(), "gas": DEPLOY_GAS})
    receipt = wait_receipt(w3, h)
    assert receipt["status"] == 1, f"token deployment failed: {receipt}"
    return token_contract(w3, receipt["contractAddress"]), receipt, h


def transfer_data(token, to: str, amount: int) -> str:
    return token.encode_abi("transfer", args=[to_checksum_address(to), amount])


def send_token_transfer(w3: Web3, token, acct, to: str, amount: int, **tx) -> str:
    base = {"to": token.address, "data": transfer_data(token, to, amount), "gas": 100_000}
    base.update(tx)
    return send_tx(w3, acct, base)


def transfer_topic() -> str:
    return "0x" + keccak(text="Transfer(address,address,uint256)").hex()


def approval_topic() -> str:
    return "0x" + keccak(text="Approval(address,address,uint256)").hex()


def error_string_data(reason: str) -> str:
    """Revert data of `Error(string)` with `reason`, as a hex string."""
    return "0x" + (keccak(text="Error(string)")[:4] + abi_encode(["string"], [reason])).hex()


# --------------------------------------------------------------------------- misc


def hexstr(b: Any) -> str:
    """HexBytes/bytes/str -> lower-case 0x hex string."""
    if isinstance(b, str):
        return b.lower() if b.startswith("0x") else "0x" + b.lower()
    return "0x" + bytes(b).hex()


def logs_bloom(logs: list) -> int:
    """The 2048-bit bloom of a list of logs (address + topics), as an int."""
    bloom = 0
    for log in logs:
        items = [bytes.fromhex(hexstr(log["address"])[2:])]
        items += [bytes.fromhex(hexstr(t)[2:]) for t in log["topics"]]
        for item in items:
            h = keccak(item)
            for i in (0, 2, 4):
                bit = ((h[i] << 8) | h[i + 1]) & 2047
                bloom |= 1 << bit
    return bloom


def bloom_int(b: Any) -> int:
    return int(hexstr(b), 16)


def eventually(fn, timeout: float = 10, interval: float = 0.05, what: str = "condition"):
    """Call fn until it returns a truthy value; return it. Fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {v!r})")
        time.sleep(interval)
