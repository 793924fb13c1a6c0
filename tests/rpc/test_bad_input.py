"""Bad input over raw HTTP: every refusal is a JSON-RPC error with the right code and message,
and the node keeps serving and keeps every transaction it accepted before."""

from __future__ import annotations

import json

import pytest
import rlp
from eth_account import Account

from rpc_helpers import (
    BLOCK_GAS_LIMIT,
    CHAIN_ID,
    GWEI,
    SECP256K1_N,
    dev_account,
    eventually,
    fresh_address,
    rpc,
    rpc_error,
    rpc_raw,
    rpc_result,
    send_tx,
    sign,
    wait_receipt,
)

SENDER = dev_account(8)
SENDER2 = dev_account(9)
REPLACER = dev_account(10)

# Transactions the node accepted: all must be mined by the end.
ACCEPTED: list[str] = []


def fees() -> dict:
    return {"maxFeePerGas": 10 * GWEI, "maxPriorityFeePerGas": 1 * GWEI}


def signed(acct, **fields) -> str:
    """A signed type-2 transfer (defaults filled in), as a 0x hex string."""
    tx = {"to": fresh_address(), "value": 1, "gas": 21_000, "nonce": 0, "chainId": CHAIN_ID, **fees()}
    tx.update(fields)
    return "0x" + sign(acct, tx).hex()


def send_raw(url, raw_hex: str) -> dict:
    return rpc(url, "eth_sendRawTransaction", [raw_hex])


def assert_refused(reply: dict, substring: str, codes=(-32000,)):
    assert "error" in reply, f"expected a refusal containing {substring!r}, got {reply}"
    err = reply["error"]
    assert err["code"] in codes, f"code {err['code']} not in {codes}: {err}"
    assert substring.lower() in err["message"].lower(), f"{substring!r} not in message: {err}"


def pending_nonce(url, acct) -> int:
    return int(rpc_result(url, "eth_getTransactionCount", [acct.address, "pending"]), 16)


def latest_nonce(url, acct) -> int:
    return int(rpc_result(url, "eth_getTransactionCount", [acct.address, "latest"]), 16)


def with_signature(raw_hex: str, *, r=None, s=None, y=None) -> str:
    """Re-encode a signed type-2 transaction with (r, s, yParity) replaced."""
    raw = bytes.fromhex(raw_hex[2:])
    assert raw[0] == 2
    fields = rlp.decode(raw[1:])
    if y is not None:
        fields[9] = rlp.sedes.big_endian_int.serialize(y)
    if r is not None:
        fields[10] = rlp.sedes.big_endian_int.serialize(r)
    if s is not None:
        fields[11] = rlp.sedes.big_endian_int.serialize(s)
    return "0x02" + rlp.encode(fields).hex()


def signature_of(raw_hex: str) -> tuple[int, int, int]:
    fields = rlp.decode(bytes.fromhex(raw_hex[4:]))
    return tuple(int.from_bytes(fields[i], "big") for i in (9, 10, 11))  # type: ignore


# --------------------------------------------------------------------------- valid first


def test_valid_transactions_first(w3, url):
    """A few valid transactions, mined, so that SENDER's nonce is > 0."""
    for acct in (SENDER, SENDER2):
        for _ in range(2):
            h = send_tx(w3, acct, {"to": fresh_address(), "value": 1_000, "gas": 21_000})
            ACCEPTED.append(h)
    for h in ACCEPTED:
        assert wait_receipt(w3, h)["status"] == 1
    assert latest_nonce(url, SENDER) >= 2


# --------------------------------------------------------------------------- raw transactions


@pytest.mark.parametrize(
    "raw",
    [
        "0xf86c0102",  # legacy list header, then cut short
        "0x02f8",  # typed, cut short
        "0x02c0",  # typed, an empty list
        "0x7f0102",  # unknown transaction type
        "0x" + "ff" * 40,
        "0x",
    ],
)
def test_malformed_rlp(url, raw):
    assert_refused(send_raw(url, raw), "decode", codes=(-32000, -32602))


@pytest.mark.parametrize("raw", ["0xzz", "0x02f8zz", "hello", "0x0"])
def test_not_hex(url, raw):
    assert_refused(send_raw(url, raw), "hex", codes=(-32602,))


def test_bad_signature(url):
    nonce = pending_nonce(url, SENDER)
    good = signed(SENDER, nonce=nonce)
    y, r, s = signature_of(good)
    cases = {
        "r = 0": with_signature(good, r=0),
        "s = 0": with_signature(good, s=0),
        "r = n": with_signature(good, r=SECP256K1_N),
        "s = n": with_signature(good, s=SECP256K1_N),
        # The other valid ECDSA signature (n - s, flipped parity): forbidden by EIP-2.
        "high s": with_signature(good, s=SECP256K1_N - s, y=1 - y),
        "yParity = 2": with_signature(good, y=2),
    }
    for what, raw in cases.items():
        reply = send_raw(url, raw)
        assert "error" in reply, f"{what}: accepted: {reply}"
        if what == "yParity = 2":
            # Not a value the encoding can hold: a decoding error, which must say so.
            assert_refused(reply, "decode", codes=(-32000, -32602))
        else:
            assert_refused(reply, "signature", codes=(-32000, -32602))
    # None of them used the nonce.
    assert pending_nonce(url, SENDER) == nonce


@pytest.mark.parametrize("kind", ["dynamic", "legacy"])
def test_wrong_chain_id(url, kind):
    nonce = pending_nonce(url, SENDER)
    if kind == "dynamic":
        raw = signed(SENDER, nonce=nonce, chainId=1)
    else:
        tx = {"to": fresh_address(), "value": 1, "gas": 21_000, "nonce": nonce, "gasPrice": 10 * GWEI, "chainId": 1}
        raw = "0x" + bytes(SENDER.sign_transaction(tx).raw_transaction).hex()
    assert_refused(send_raw(url, raw), "chain id")


def test_nonce_too_low(url):
    assert latest_nonce(url, SENDER) >= 1
    assert_refused(send_raw(url, signed(SENDER, nonce=0)), "nonce too low")


def test_nonce_too_high(url):
    nxt = pending_nonce(url, SENDER)
    assert_refused(send_raw(url, signed(SENDER, nonce=nxt + 65)), "nonce too high")
    assert_refused(send_raw(url, signed(SENDER, nonce=nxt + 10_000)), "nonce too high")
    assert_refused(send_raw(url, signed(SENDER, nonce=2**63)), "nonce too high")
    assert pending_nonce(url, SENDER) == nxt


def test_insufficient_funds(url):
    poor = Account.create()
    assert_refused(send_raw(url, signed(poor, nonce=0)), "insufficient funds")
    # A dev account sending more than it has.
    nonce = pending_nonce(url, SENDER)
    balance = int(rpc_result(url, "eth_getBalance", [SENDER.address, "latest"]), 16)
    assert_refused(send_raw(url, signed(SENDER, nonce=nonce, value=balance + 1)), "insufficient funds")


def test_intrinsic_gas_too_low(url):
    nonce = pending_nonce(url, SENDER)
    assert_refused(send_raw(url, signed(SENDER, nonce=nonce, gas=20_000)), "intrinsic gas too low")
    # Calldata raises the intrinsic gas: 21000 is not enough with 100 non-zero bytes.
    assert_refused(
        send_raw(url, signed(SENDER, nonce=nonce, gas=21_000, data="0x" + "01" * 100)), "intrinsic gas too low"
    )


def test_gas_above_block_limit(url):
    nonce = pending_nonce(url, SENDER)
    assert_refused(send_raw(url, signed(SENDER, nonce=nonce, gas=40_000_000)), "exceeds block gas limit")
    assert_refused(send_raw(url, signed(SENDER, nonce=nonce, gas=BLOCK_GAS_LIMIT + 1)), "exceeds block gas limit")


def test_oversized_transaction(url):
    nonce = pending_nonce(url, SENDER)
    raw = signed(SENDER, nonce=nonce, gas=6_000_000, data="0x" + "01" * (130 * 1024))
    assert len(raw) // 2 - 1 > 128 * 1024
    assert_refused(send_raw(url, raw), "oversized")
    assert pending_nonce(url, SENDER) == nonce


def test_already_known_and_underpriced_replacement(w3, url):
    """Done after a nonce gap, so the transactions wait in the pool and cannot be mined meanwhile."""
    n = latest_nonce(url, REPLACER)
    assert pending_nonce(url, REPLACER) == n
    to = fresh_address()
    tip, cap = 1 * GWEI, 10 * GWEI
    first = signed(REPLACER, nonce=n + 1, to=to, maxPriorityFeePerGas=tip, maxFeePerGas=cap)
    reply = send_raw(url, first)
    assert "error" not in reply, reply
    first_hash = reply["result"]
    # The same bytes again.
    assert_refused(send_raw(url, first), "already known")
    # Same nonce, fees up 5%: not enough.
    five = signed(REPLACER, nonce=n + 1, to=to, maxPriorityFeePerGas=tip * 105 // 100, maxFeePerGas=cap * 105 // 100)
    assert_refused(send_raw(url, five), "underpriced")
    # Same nonce, same fees, other content: not enough either.
    same = signed(REPLACER, nonce=n + 1, to=to, value=2, maxPriorityFeePerGas=tip, maxFeePerGas=cap)
    assert_refused(send_raw(url, same), "underpriced")
    # Fees up exactly 10%: replaces.
    ten = signed(REPLACER, nonce=n + 1, to=to, value=3, maxPriorityFeePerGas=tip * 110 // 100, maxFeePerGas=cap * 110 // 100)
    reply = send_raw(url, ten)
    assert "error" not in reply, f"a 10% bump must replace: {reply}"
    replacement_hash = reply["result"]
    ACCEPTED.append(replacement_hash)
    # Fill the gap.
    gap = send_raw(url, signed(REPLACER, nonce=n, maxPriorityFeePerGas=tip, maxFeePerGas=cap))
    assert "error" not in gap, gap
    ACCEPTED.append(gap["result"])
    r = wait_receipt(w3, replacement_hash)
    assert r["status"] == 1
    assert int(rpc_result(url, "eth_getTransactionByHash", [replacement_hash])["value"], 16) == 3
    assert rpc_result(url, "eth_getTransactionReceipt", [first_hash]) is None, "the replaced one is never mined"
    assert latest_nonce(url, REPLACER) == n + 2


# --------------------------------------------------------------------------- the envelope


def test_invalid_json(url):
    for body in ["{not json", '{"jsonrpc":"2.0","id":1,"method":"eth_chainId",', "\x00\x01", "[1,2"]:
        reply = rpc_raw(url, body)
        assert isinstance(reply, dict) and "error" in reply, reply
        assert reply["error"]["code"] == -32700, reply
        assert reply.get("id") is None


def test_unknown_method(url):
    err = rpc_error(url, "eth_noSuchMethod", [])
    assert err["code"] == -32601, err
    err = rpc_error(url, "tessera_definitelyNotAMethod", [1, 2])
    assert err["code"] == -32601, err


def test_batches(url):
    ok = rpc_raw(url, [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []} for i in range(100)])
    assert isinstance(ok, list) and len(ok) == 100
    assert sorted(r["id"] for r in ok) == list(range(100))
    assert all(r.get("result") == "0x7a69" for r in ok)
    mixed = rpc_raw(url, [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_noSuchMethod", "params": []},
    ])  # fmt: skip
    assert {r["id"]: ("result" in r, r.get("error", {}).get("code")) for r in mixed} == {
        1: (True, None),
        2: (False, -32601),
    }

    too_many = rpc_raw(url, [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []} for i in range(101)])
    errors = [too_many] if isinstance(too_many, dict) else too_many
    assert errors and all("error" in e for e in errors), f"101 requests must be refused: {str(too_many)[:300]}"
    assert any("batch" in e["error"]["message"].lower() for e in errors), errors[:2]
    assert len(errors) < 101


def test_large_request_body_accepted(url):
    """Bodies up to 5 MiB are accepted: 4 MiB of JSON whitespace around a small request."""
    body = '{"jsonrpc":"2.0","id":7,' + " " * (4 * 1024 * 1024) + '"method":"eth_chainId","params":[]}'
    assert rpc_raw(url, body, timeout=30) == {"jsonrpc": "2.0", "id": 7, "result": "0x7a69"}


@pytest.mark.parametrize(
    "method,params",
    [
        ("eth_getBalance", [12345, "latest"]),  # a number as address
        ("eth_getBalance", ["0xzz", "latest"]),  # a non-hex address
        ("eth_getBalance", ["0x1234", "latest"]),  # a too-short address
        ("eth_getBalance", [SENDER.address, "notatag"]),  # a bad block tag
        ("eth_getBalance", []),  # missing parameters
        ("eth_getBlockByNumber", [{"a": 1}, False]),  # a dict as block number
        ("eth_getBlockByNumber", ["latest", "yes"]),  # a string as bool
        ("eth_getBlockByHash", ["0x1234", False]),  # a short hash
        ("eth_getTransactionByHash", [42]),
        ("eth_call", ["notanobject", "latest"]),
        ("eth_getLogs", [{"fromBlock": {"x": 1}}]),
        ("eth_sendRawTransaction", [12]),
        ("eth_getTransactionCount", [SENDER.address, "latest", "extra", "params"]),  # too many
    ],
)
def test_wrong_params(url, method, params):
    err = rpc_error(url, method, params)
    assert err["code"] == -32602, f"{method}{params!r}: {err}"


def test_params_not_a_list_or_object(url):
    reply = rpc_raw(url, {"jsonrpc": "2.0", "id": 3, "method": "eth_getBalance", "params": "0x00"})
    assert "error" in reply and reply["error"]["code"] in (-32602, -32600), reply


# --------------------------------------------------------------------------- still fine


def test_node_still_serves_and_keeps_accepted_transactions(w3, url):
    start = int(rpc_result(url, "eth_blockNumber"), 16)
    eventually(lambda: int(rpc_result(url, "eth_blockNumber"), 16) >= start + 2, timeout=10, what="new blocks")
    assert len(ACCEPTED) >= 6
    for h in ACCEPTED:
        assert rpc_result(url, "eth_getTransactionByHash", [h]) is not None, h
        receipt = wait_receipt(w3, h)
        assert receipt["status"] == 1
    # The refused transactions left no trace: SENDER's nonce only counts the valid ones.
    assert latest_nonce(url, SENDER) == 2 == pending_nonce(url, SENDER)
    # And a new valid transaction still goes through.
    assert wait_receipt(w3, send_tx(w3, SENDER, {"to": fresh_address(), "value": 1, "gas": 21_000}))["status"] == 1
    assert json.loads(json.dumps(rpc_result(url, "eth_chainId"))) == "0x7a69"
