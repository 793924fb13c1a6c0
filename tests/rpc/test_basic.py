"""The node's identity, dev accounts, block production and block fields, via web3.py and raw
JSON-RPC."""

from __future__ import annotations

import re

from eth_utils import keccak
import rlp

from rpc_helpers import (
    BASE_FEE_FLOOR,
    BLOCK_GAS_LIMIT,
    CHAIN_ID,
    DEV_BALANCE,
    dev_account,
    fresh_address,
    hexstr,
    rpc_result,
    wait_for_block,
)

EMPTY_TRIE_ROOT = "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
EMPTY_UNCLES_HASH = "0x" + keccak(rlp.encode([])).hex()
HEX_QUANTITY = re.compile(r"^0x(0|[1-9a-f][0-9a-f]*)$")
HEX_DATA = re.compile(r"^0x([0-9a-f]{2})*$")
HASH32 = re.compile(r"^0x[0-9a-f]{64}$")
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")

# The geth names every client relies on.
BLOCK_FIELDS = {
    "number", "hash", "parentHash", "nonce", "sha3Uncles", "logsBloom", "transactionsRoot",
    "stateRoot", "receiptsRoot", "miner", "difficulty", "extraData", "size", "gasLimit",
    "gasUsed", "timestamp", "transactions", "uncles", "baseFeePerGas", "mixHash",
}  # fmt: skip
QUANTITY_FIELDS = {"number", "difficulty", "size", "gasLimit", "gasUsed", "timestamp", "baseFeePerGas"}


def test_identity(url, w3):
    assert rpc_result(url, "eth_chainId") == hex(CHAIN_ID) == "0x7a69"
    assert w3.eth.chain_id == CHAIN_ID
    assert rpc_result(url, "net_version") == str(CHAIN_ID)
    version = rpc_result(url, "web3_clientVersion")
    assert isinstance(version, str) and version.strip()
    assert rpc_result(url, "eth_syncing") is False
    assert rpc_result(url, "eth_accounts") == []
    assert w3.is_connected()


def test_dev_accounts_printed_and_funded(node, url, w3):
    out = node.stdout_text().lower()
    for i in range(20):
        acct = dev_account(i)
        assert acct.address.lower() in out, f"dev account {i} ({acct.address}) not printed"
        assert acct.key.hex().lower().removeprefix("0x") in out, f"key of dev account {i} not printed"
        assert w3.eth.get_balance(acct.address, "earliest") == DEV_BALANCE
        assert int(rpc_result(url, "eth_getBalance", [acct.address, "0x0"]), 16) == DEV_BALANCE
        assert w3.eth.get_transaction_count(acct.address, 0) == 0
    assert dev_account(0).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    # Only the first 20 are funded.
    assert w3.eth.get_balance(dev_account(20).address, "earliest") == 0
    assert w3.eth.get_balance(dev_account(20).address, "latest") == 0
    # Genesis carries exactly the dev allocation: nothing else.
    assert w3.eth.get_balance(fresh_address(), "latest") == 0


def test_blocks_are_produced_and_linked(url, w3):
    start = w3.eth.block_number
    wait_for_block(w3, start + 4, timeout=10)
    blocks = [rpc_result(url, "eth_getBlockByNumber", [hex(n), False]) for n in range(start, start + 5)]
    miner = blocks[0]["miner"]
    for prev, blk in zip(blocks, blocks[1:]):
        assert int(blk["number"], 16) == int(prev["number"], 16) + 1
        assert blk["parentHash"] == prev["hash"]
        assert int(blk["timestamp"], 16) >= int(prev["timestamp"], 16)
    for blk in blocks:
        missing = BLOCK_FIELDS - blk.keys()
        assert not missing, f"block lacks geth fields {missing}: {blk}"
        for f in QUANTITY_FIELDS:
            assert HEX_QUANTITY.match(blk[f]), f"{f}={blk[f]!r} is not a hex quantity"
        for f in ("hash", "parentHash", "sha3Uncles", "transactionsRoot", "stateRoot", "receiptsRoot", "mixHash"):
            assert HASH32.match(blk[f]), f"{f}={blk[f]!r} is not a 32-byte hash"
        assert HEX_DATA.match(blk["logsBloom"]) and len(blk["logsBloom"]) == 2 + 512
        assert HEX_DATA.match(blk["extraData"]) and len(blk["extraData"]) <= 2 + 64
        assert re.match(r"^0x[0-9a-f]{16}$", blk["nonce"]), blk["nonce"]
        assert ADDRESS.match(blk["miner"])
        assert blk["miner"] == miner, "the fee recipient is fixed"
        assert int(blk["gasLimit"], 16) == BLOCK_GAS_LIMIT
        assert int(blk["baseFeePerGas"], 16) >= BASE_FEE_FLOOR
        assert blk["uncles"] == [] and blk["sha3Uncles"] == EMPTY_UNCLES_HASH
        if not blk["transactions"]:
            assert int(blk["gasUsed"], 16) == 0
            assert blk["transactionsRoot"] == EMPTY_TRIE_ROOT
            assert blk["receiptsRoot"] == EMPTY_TRIE_ROOT
            assert int(blk["logsBloom"], 16) == 0
        # By hash: the very same block.
        assert rpc_result(url, "eth_getBlockByHash", [blk["hash"], False]) == blk
    dev = {dev_account(i).address.lower() for i in range(20)}
    assert miner.lower() not in dev, "the fee recipient must not be a dev account"


def test_block_tags(url, w3):
    latest = w3.eth.get_block("latest")
    for tag in ("latest", "pending", "earliest", "safe", "finalized"):
        blk = rpc_result(url, "eth_getBlockByNumber", [tag, False])
        assert blk is not None, tag
        n = int(blk["number"], 16)
        if tag == "earliest":
            assert n == 0
        elif tag == "pending":
            assert n >= latest["number"]
        else:
            assert n >= latest["number"] or tag in ("safe", "finalized")
            assert n <= w3.eth.block_number
        bal = rpc_result(url, "eth_getBalance", [dev_account(19).address, tag])
        assert HEX_QUANTITY.match(bal)
    genesis = w3.eth.get_block(0)
    assert genesis["number"] == 0
    assert w3.eth.get_block("earliest")["hash"] == genesis["hash"]
    assert genesis["parentHash"] == b"\x00" * 32


def test_missing_things_are_null(url, w3):
    head = w3.eth.block_number
    assert rpc_result(url, "eth_getBlockByNumber", [hex(head + 100_000), False]) is None
    assert rpc_result(url, "eth_getBlockByHash", ["0x" + "ab" * 32, False]) is None
    assert rpc_result(url, "eth_getTransactionByHash", ["0x" + "cd" * 32]) is None
    assert rpc_result(url, "eth_getTransactionReceipt", ["0x" + "cd" * 32]) is None


def test_empty_account_reads(url, w3):
    addr = fresh_address()
    assert rpc_result(url, "eth_getCode", [addr, "latest"]) == "0x"
    assert rpc_result(url, "eth_getBalance", [addr, "latest"]) == "0x0"
    assert rpc_result(url, "eth_getTransactionCount", [addr, "latest"]) == "0x0"
    assert rpc_result(url, "eth_getTransactionCount", [addr, "pending"]) == "0x0"
    slot = rpc_result(url, "eth_getStorageAt", [addr, "0x0", "latest"])
    assert HASH32.match(slot) and int(slot, 16) == 0, f"storage word must be 32 bytes: {slot!r}"
    assert hexstr(w3.eth.get_code(dev_account(0).address)) == "0x"
