"""An ERC-20 (contracts/Token.vy, compiled with vyper) deployed and used through web3.py:
deployment receipt, code, balances via eth_call, events via eth_getLogs, filters and WebSocket
subscriptions (logs and newHeads)."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3, WebSocketProvider
from websockets.sync.client import connect as ws_connect

from rpc_helpers import (
    TOKEN_DECIMALS,
    TOKEN_NAME,
    TOKEN_SUPPLY,
    TOKEN_SYMBOL,
    approval_topic,
    bloom_int,
    create_address,
    deploy_token,
    dev_account,
    eventually,
    fresh_address,
    hexstr,
    logs_bloom,
    pad_address,
    rpc,
    rpc_result,
    send_token_transfer,
    send_tx,
    sign,
    token_artifacts,
    transfer_data,
    transfer_topic,
    wait_for_block,
    wait_receipt,
)

OWNER = dev_account(0)
HOLDER = dev_account(1)
WS_TIMEOUT = 20  # seconds for any single WebSocket wait


@pytest.fixture(scope="module")
def deployed(w3):
    nonce = w3.eth.get_transaction_count(OWNER.address, "pending")
    token, receipt, tx_hash = deploy_token(w3, OWNER)
    return {"token": token, "receipt": receipt, "tx_hash": tx_hash, "nonce": nonce}


def raw_logs(url, flt: dict) -> list:
    return rpc_result(url, "eth_getLogs", [flt])


def test_deploy_receipt_and_code(w3, url, deployed):
    token, receipt = deployed["token"], deployed["receipt"]
    tx = w3.eth.get_transaction(deployed["tx_hash"])
    block = w3.eth.get_block(receipt["blockNumber"])

    assert receipt["status"] == 1
    assert receipt["contractAddress"] == create_address(OWNER.address, deployed["nonce"])
    assert token.address == receipt["contractAddress"]
    assert receipt["to"] is None and tx["to"] is None
    assert receipt["from"] == OWNER.address == tx["from"]
    assert receipt["type"] == 2 == tx["type"]
    assert receipt["transactionHash"] == tx["hash"]
    assert receipt["blockHash"] == block["hash"] == tx["blockHash"]
    assert receipt["blockNumber"] == tx["blockNumber"]
    assert receipt["transactionIndex"] == tx["transactionIndex"]
    assert block["transactions"][receipt["transactionIndex"]] == tx["hash"]
    # Deployment costs more than a transfer and no more than the gas limit given.
    assert 53_000 < receipt["gasUsed"] <= tx["gas"]
    assert receipt["cumulativeGasUsed"] >= receipt["gasUsed"]
    expected_price = min(tx["maxFeePerGas"], block["baseFeePerGas"] + tx["maxPriorityFeePerGas"])
    assert receipt["effectiveGasPrice"] == expected_price
    # One log: the mint, Transfer(0x0 -> owner, supply).
    assert len(receipt["logs"]) == 1
    log = receipt["logs"][0]
    assert log["address"] == token.address
    assert [hexstr(t) for t in log["topics"]] == [
        transfer_topic(),
        pad_address("0x" + "00" * 20),
        pad_address(OWNER.address),
    ]
    assert int(hexstr(log["data"]), 16) == TOKEN_SUPPLY
    assert log["transactionHash"] == tx["hash"] and log["blockHash"] == block["hash"]
    assert log["blockNumber"] == block["number"]
    assert log["transactionIndex"] == receipt["transactionIndex"]
    assert log["removed"] is False
    assert bloom_int(receipt["logsBloom"]) == logs_bloom(receipt["logs"])
    assert bloom_int(block["logsBloom"]) & logs_bloom(receipt["logs"]) == logs_bloom(receipt["logs"])

    # The code at the address is exactly the compiler's runtime code, and only from that block on.
    assert hexstr(w3.eth.get_code(token.address)) == token_artifacts()["runtime"].lower()
    assert hexstr(w3.eth.get_code(token.address, block["number"] - 1)) == "0x"
    assert rpc_result(url, "eth_getCode", [token.address, hex(block["number"])]) != "0x"

    # Views through eth_call.
    f = token.functions
    assert f.name().call() == TOKEN_NAME
    assert f.symbol().call() == TOKEN_SYMBOL
    assert f.decimals().call() == TOKEN_DECIMALS
    assert f.totalSupply().call() == TOKEN_SUPPLY
    assert f.balanceOf(OWNER.address).call() == TOKEN_SUPPLY
    # And straight from storage (vyper layout: totalSupply's slot, balanceOf's HashMap).
    layout = token_artifacts()["layout"]
    supply_slot = layout["totalSupply"]["slot"]
    assert int(hexstr(w3.eth.get_storage_at(token.address, supply_slot)), 16) == TOKEN_SUPPLY
    decimals_word = rpc_result(url, "eth_getStorageAt", [token.address, hex(layout["decimals"]["slot"]), "latest"])
    assert int(decimals_word, 16) == TOKEN_DECIMALS


def test_transfers_and_balances(w3, deployed):
    token = deployed["token"]
    f = token.functions
    other = fresh_address()
    owner_before = f.balanceOf(OWNER.address).call()
    holder_before = f.balanceOf(HOLDER.address).call()

    r1 = wait_receipt(w3, send_token_transfer(w3, token, OWNER, HOLDER.address, 1000))
    r2 = wait_receipt(w3, send_token_transfer(w3, token, OWNER, other, 250))
    assert r1["status"] == 1 and r2["status"] == 1
    assert f.balanceOf(OWNER.address).call() == owner_before - 1250
    assert f.balanceOf(HOLDER.address).call() == holder_before + 1000
    assert f.balanceOf(other).call() == 250
    assert f.totalSupply().call() == TOKEN_SUPPLY
    # Per-block reads.
    assert f.balanceOf(other).call(block_identifier=r2["blockNumber"] - 1) == 0
    assert f.balanceOf(other).call(block_identifier=r2["blockNumber"]) == 250
    # The balance word in storage: vyper's HashMap slot is keccak(slot ++ key).
    slot = token_artifacts()["layout"]["balanceOf"]["slot"]
    key = keccak(slot.to_bytes(32, "big") + bytes(12) + bytes.fromhex(other[2:]))
    assert int(hexstr(w3.eth.get_storage_at(token.address, int.from_bytes(key, "big"))), 16) == 250

    # The receipt's decoded event.
    (ev,) = token.events.Transfer().process_receipt(r1)
    assert ev["args"]["sender"] == OWNER.address
    assert ev["args"]["receiver"] == HOLDER.address
    assert ev["args"]["value"] == 1000
    assert bloom_int(r1["logsBloom"]) == logs_bloom(r1["logs"])


def test_approve_and_transfer_from(w3, deployed):
    token = deployed["token"]
    f = token.functions
    dest = fresh_address()
    data = token.encode_abi("approve", args=[HOLDER.address, 500])
    r = wait_receipt(w3, send_tx(w3, OWNER, {"to": token.address, "data": data, "gas": 100_000}))
    assert r["status"] == 1
    (ev,) = token.events.Approval().process_receipt(r)
    assert (ev["args"]["owner"], ev["args"]["spender"], ev["args"]["value"]) == (OWNER.address, HOLDER.address, 500)
    assert hexstr(r["logs"][0]["topics"][0]) == approval_topic()
    assert f.allowance(OWNER.address, HOLDER.address).call() == 500

    owner_before = f.balanceOf(OWNER.address).call()
    data = token.encode_abi("transferFrom", args=[OWNER.address, dest, 200])
    r = wait_receipt(w3, send_tx(w3, HOLDER, {"to": token.address, "data": data, "gas": 100_000}))
    assert r["status"] == 1
    assert f.allowance(OWNER.address, HOLDER.address).call() == 300
    assert f.balanceOf(dest).call() == 200
    assert f.balanceOf(OWNER.address).call() == owner_before - 200


def test_get_logs_with_topic_filters(w3, url, deployed):
    token = deployed["token"]
    recipient = fresh_address()
    start = deployed["receipt"]["blockNumber"]
    receipts = [
        wait_receipt(w3, send_token_transfer(w3, token, OWNER, recipient, amount)) for amount in (7, 11)
    ]
    # A transfer to someone else in between, which the topic filter must leave out.
    wait_receipt(w3, send_token_transfer(w3, token, OWNER, fresh_address(), 13))
    end = w3.eth.block_number
    expected = []
    for r in receipts:
        assert r["status"] == 1
        raw = rpc_result(url, "eth_getTransactionReceipt", [hexstr(r["transactionHash"])])
        expected += raw["logs"]

    flt = {
        "fromBlock": hex(start),
        "toBlock": hex(end),
        "address": token.address,
        "topics": [transfer_topic(), None, pad_address(recipient)],
    }
    assert raw_logs(url, flt) == expected
    # web3.py's own call, same filter.
    got = w3.eth.get_logs({**flt, "fromBlock": start, "toBlock": end})
    assert [(hexstr(l["transactionHash"]), l["logIndex"]) for l in got] == [
        (l["transactionHash"], int(l["logIndex"], 16)) for l in expected
    ]
    for l in got:
        assert int(hexstr(l["data"]), 16) in (7, 11)
        assert hexstr(l["topics"][2]) == pad_address(recipient)

    # Without the recipient topic: every transfer from OWNER in the range, a superset.
    from_owner = raw_logs(url, {**flt, "topics": [transfer_topic(), pad_address(OWNER.address)]})
    assert all(l in from_owner for l in expected)
    assert len(from_owner) >= 3
    assert all(l["topics"][1] == pad_address(OWNER.address) for l in from_owner)
    # OR within one position.
    either = raw_logs(url, {**flt, "topics": [[transfer_topic(), approval_topic()], None, pad_address(recipient)]})
    assert either == expected
    # By block hash.
    r0 = receipts[0]
    by_hash = raw_logs(url, {"blockHash": hexstr(r0["blockHash"]), "address": token.address,
                             "topics": [transfer_topic(), None, pad_address(recipient)]})  # fmt: skip
    assert by_hash == [l for l in expected if l["blockHash"] == hexstr(r0["blockHash"])]
    # Filters that match nothing.
    assert raw_logs(url, {**flt, "topics": [approval_topic(), None, pad_address(recipient)]}) == []
    assert raw_logs(url, {**flt, "address": fresh_address()}) == []
    assert raw_logs(url, {**flt, "fromBlock": hex(start - 1), "toBlock": hex(start - 1)}) == []


def test_log_filter_changes(w3, url, deployed):
    token = deployed["token"]
    # From the next block on: nothing of the earlier tests' transfers can match.
    head = w3.eth.block_number
    flt = {"fromBlock": hex(head + 1), "address": token.address, "topics": [transfer_topic()]}
    fid = rpc_result(url, "eth_newFilter", [flt])
    assert re.fullmatch(r"0x[0-9a-f]+", fid), f"filter id must be a 0x hex string: {fid!r}"

    hashes = [send_token_transfer(w3, token, OWNER, fresh_address(), amount) for amount in (21, 22)]
    for h in hashes:
        assert wait_receipt(w3, h)["status"] == 1

    seen: list = []

    def poll():
        seen.extend(rpc_result(url, "eth_getFilterChanges", [fid]))
        return {l["transactionHash"] for l in seen} >= set(hashes)

    eventually(poll, timeout=10, what="the two Transfer logs in eth_getFilterChanges")
    assert [l["transactionHash"] for l in seen] == hashes, "each log exactly once, in order"
    for l in seen:
        assert l["address"].lower() == token.address.lower()
        assert l["topics"][0] == transfer_topic()
        assert l["removed"] is False
    # Nothing new since the last poll.
    assert rpc_result(url, "eth_getFilterChanges", [fid]) == []
    # eth_getFilterLogs: everything the filter matches, from its fromBlock.
    all_logs = rpc_result(url, "eth_getFilterLogs", [fid])
    assert [l["transactionHash"] for l in all_logs] == hashes
    assert all_logs == seen

    # web3.py's filter object over the same methods.
    wf = w3.eth.filter({"address": token.address, "topics": [transfer_topic()]})
    h3 = send_token_transfer(w3, token, OWNER, fresh_address(), 23)
    wait_receipt(w3, h3)
    entries = eventually(wf.get_new_entries, timeout=10, what="web3 filter entries")
    assert [hexstr(e["transactionHash"]) for e in entries] == [h3]

    assert rpc_result(url, "eth_uninstallFilter", [fid]) is True
    assert rpc_result(url, "eth_uninstallFilter", [fid]) is False
    assert w3.eth.uninstall_filter(wf.filter_id) is True
    reply = rpc(url, "eth_getFilterChanges", [fid])
    assert "error" in reply, f"an uninstalled filter must be gone: {reply}"


def test_log_filter_from_latest_keeps_blocks_between_polls(w3, url, deployed):
    """A filter with no fromBlock reports a block that was finalized before the next poll, even
    when newer blocks came after it."""
    token = deployed["token"]
    fid = rpc_result(url, "eth_newFilter", [{"address": token.address, "topics": [transfer_topic()]}])
    assert rpc_result(url, "eth_getFilterChanges", [fid]) == []
    h = send_token_transfer(w3, token, OWNER, fresh_address(), 24)
    block = wait_receipt(w3, h)["blockNumber"]
    wait_for_block(w3, block + 2)
    logs = rpc_result(url, "eth_getFilterChanges", [fid])
    assert [l["transactionHash"] for l in logs] == [h]
    assert rpc_result(url, "eth_uninstallFilter", [fid]) is True


def test_block_filter(w3, url):
    fid = rpc_result(url, "eth_newBlockFilter")
    assert re.fullmatch(r"0x[0-9a-f]+", fid), fid
    start = w3.eth.block_number
    got: list = []

    def poll():
        got.extend(rpc_result(url, "eth_getFilterChanges", [fid]))
        return len(got) >= 3

    eventually(poll, timeout=10, what="three new block hashes")
    numbers = []
    for h in got:
        blk = rpc_result(url, "eth_getBlockByHash", [h, False])
        assert blk is not None and blk["hash"] == h
        numbers.append(int(blk["number"], 16))
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    assert numbers[0] >= start
    assert numbers[0] <= start + 1, "the filter reports blocks from its creation on"
    # The next poll continues where the last stopped.
    time.sleep(0.5)
    more = rpc_result(url, "eth_getFilterChanges", [fid])
    if more:
        first = int(rpc_result(url, "eth_getBlockByHash", [more[0], False])["number"], 16)
        assert first == numbers[-1] + 1
    assert rpc_result(url, "eth_uninstallFilter", [fid]) is True


# --------------------------------------------------------------------------- WebSocket


def test_ws_logs_subscription(w3, ws_url, deployed):
    token = deployed["token"]
    recipient = fresh_address()

    async def run():
        async with AsyncWeb3(WebSocketProvider(ws_url, request_timeout=WS_TIMEOUT)) as aw3:
            assert await aw3.eth.chain_id == 31337
            sub_id = await aw3.eth.subscribe("logs", {"address": token.address})
            assert re.fullmatch(r"0x[0-9a-f]+", sub_id), f"subscription id {sub_id!r}"
            nonce = await aw3.eth.get_transaction_count(OWNER.address, "pending")
            block = await aw3.eth.get_block("latest")
            tx = {
                "to": token.address,
                "data": transfer_data(token, recipient, 77),
                "gas": 100_000,
                "nonce": nonce,
                "maxFeePerGas": 2 * block["baseFeePerGas"] + 10**9,
                "maxPriorityFeePerGas": 10**9,
                "value": 0,
            }
            tx_hash = await aw3.eth.send_raw_transaction(sign(OWNER, tx))
            async with asyncio.timeout(WS_TIMEOUT):
                async for msg in aw3.socket.process_subscriptions():
                    assert msg["subscription"] == sub_id
                    log = msg["result"]
                    if log["transactionHash"] == tx_hash:
                        break
            assert await aw3.eth.unsubscribe(sub_id) is True
            return log, tx_hash

    log, tx_hash = asyncio.run(asyncio.wait_for(run(), WS_TIMEOUT * 2))
    receipt = wait_receipt(w3, tx_hash)
    assert receipt["status"] == 1
    (expected,) = receipt["logs"]
    assert log["address"] == token.address
    assert [hexstr(t) for t in log["topics"]] == [transfer_topic(), pad_address(OWNER.address), pad_address(recipient)]
    assert int(hexstr(log["data"]), 16) == 77
    for k in ("blockHash", "blockNumber", "logIndex", "transactionIndex", "transactionHash"):
        assert log[k] == expected[k], k
    assert log["removed"] is False


def test_ws_new_heads_subscription(ws_url):
    async def run():
        async with AsyncWeb3(WebSocketProvider(ws_url, request_timeout=WS_TIMEOUT)) as aw3:
            sub_id = await aw3.eth.subscribe("newHeads")
            assert re.fullmatch(r"0x[0-9a-f]+", sub_id), f"subscription id {sub_id!r}"
            heads = []
            async with asyncio.timeout(WS_TIMEOUT):
                async for msg in aw3.socket.process_subscriptions():
                    assert msg["subscription"] == sub_id
                    heads.append(msg["result"])
                    if len(heads) == 3:
                        break
            blocks = [await aw3.eth.get_block(h["number"]) for h in heads]
            assert await aw3.eth.unsubscribe(sub_id) is True
            return heads, blocks

    heads, blocks = asyncio.run(asyncio.wait_for(run(), WS_TIMEOUT * 2))
    for head, blk in zip(heads, blocks):
        for k in ("hash", "parentHash", "number", "timestamp", "gasLimit", "gasUsed", "baseFeePerGas",
                  "miner", "stateRoot", "receiptsRoot", "transactionsRoot", "logsBloom"):  # fmt: skip
            assert head[k] == blk[k], f"newHeads {k} differs from eth_getBlockByNumber"
    assert [h["number"] for h in heads] == [heads[0]["number"] + i for i in range(3)]
    assert heads[1]["parentHash"] == heads[0]["hash"] and heads[2]["parentHash"] == heads[1]["hash"]


def test_ws_raw_notification_format(ws_url, url):
    """The wire format geth uses: {"jsonrpc","method":"eth_subscription","params":{subscription,result}}."""
    with ws_connect(ws_url, open_timeout=10, close_timeout=5) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
        assert json.loads(ws.recv(timeout=WS_TIMEOUT)) == {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_subscribe", "params": ["newHeads"]}))
        reply = json.loads(ws.recv(timeout=WS_TIMEOUT))
        assert reply["id"] == 2 and "error" not in reply, reply
        sub = reply["result"]
        assert isinstance(sub, str) and re.fullmatch(r"0x[0-9a-f]+", sub), sub
        notes = []
        deadline = time.monotonic() + WS_TIMEOUT
        while len(notes) < 2 and time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=WS_TIMEOUT))
            assert msg.get("jsonrpc") == "2.0" and msg.get("method") == "eth_subscription", msg
            assert "id" not in msg, "a notification has no id"
            assert msg["params"]["subscription"] == sub
            notes.append(msg["params"]["result"])
        assert len(notes) == 2
        for head in notes:
            blk = rpc_result(url, "eth_getBlockByNumber", [head["number"], False])
            assert head["hash"] == blk["hash"] and head["parentHash"] == blk["parentHash"]
        assert int(notes[1]["number"], 16) == int(notes[0]["number"], 16) + 1
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "eth_unsubscribe", "params": [sub]}))
        # Notifications already in flight may come first.
        deadline = time.monotonic() + WS_TIMEOUT
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=WS_TIMEOUT))
            if msg.get("id") == 3:
                assert msg["result"] is True, msg
                break
        else:
            pytest.fail("no reply to eth_unsubscribe")
