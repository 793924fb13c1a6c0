"""A node with --data-dir keeps its chain across a clean stop (SIGTERM) and a crash (SIGKILL):
the same blocks, balances, receipts and logs, and it goes on producing blocks afterwards."""

from __future__ import annotations

import signal

import pytest

from rpc_helpers import (
    Node,
    deploy_token,
    dev_account,
    fresh_address,
    hexstr,
    rpc_result,
    send_token_transfer,
    send_tx,
    wait_for_block,
    wait_receipt,
)

OWNER = dev_account(0)
HOLDER = dev_account(1)
PAYER = dev_account(2)


def make_activity(w3, token, recipients: list[str]) -> list[str]:
    """Token transfers and ETH transfers; returns the mined transaction hashes."""
    hashes = []
    for i, to in enumerate(recipients):
        hashes.append(send_token_transfer(w3, token, OWNER, to, 100 + i))
        hashes.append(send_tx(w3, PAYER, {"to": to, "value": 10**15 + i, "gas": 21_000}))
    hashes.append(send_token_transfer(w3, token, OWNER, HOLDER.address, 5))
    for h in hashes:
        assert wait_receipt(w3, h)["status"] == 1
    return hashes


def snapshot(node: Node, token_address: str, tx_hashes: list[str], addresses: list[str]) -> dict:
    """Everything that must survive, as the raw JSON the node serves, at the current head."""
    url = node.http_url
    head = int(rpc_result(url, "eth_blockNumber"), 16)
    at = hex(head)
    block = rpc_result(url, "eth_getBlockByNumber", [at, True])
    miner = block["miner"]
    token_call = lambda a: {"to": token_address, "data": "0x70a08231" + "00" * 12 + a[2:].lower()}  # noqa: E731
    return {
        "token": token_address,
        "head": head,
        "block": block,
        "blocks": [rpc_result(url, "eth_getBlockByNumber", [hex(n), False]) for n in range(max(0, head - 20), head + 1)],
        "balances": {a: rpc_result(url, "eth_getBalance", [a, at]) for a in addresses + [miner, token_address]},
        "nonces": {a: rpc_result(url, "eth_getTransactionCount", [a, at]) for a in addresses},
        "token_balances": {a: rpc_result(url, "eth_call", [token_call(a), at]) for a in addresses},
        "code": rpc_result(url, "eth_getCode", [token_address, at]),
        "receipts": {h: rpc_result(url, "eth_getTransactionReceipt", [h]) for h in tx_hashes},
        "txs": {h: rpc_result(url, "eth_getTransactionByHash", [h]) for h in tx_hashes},
        "logs": rpc_result(url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": at, "address": token_address}]),
    }


def verify(node: Node, snap: dict) -> None:
    url = node.http_url
    at = hex(snap["head"])
    new_head = int(rpc_result(url, "eth_blockNumber"), 16)
    assert new_head >= snap["head"], f"head went back from {snap['head']} to {new_head}"
    assert rpc_result(url, "eth_getBlockByNumber", [at, True]) == snap["block"]
    for blk in snap["blocks"]:
        assert rpc_result(url, "eth_getBlockByNumber", [blk["number"], False]) == blk
        assert rpc_result(url, "eth_getBlockByHash", [blk["hash"], False]) == blk
    for a, bal in snap["balances"].items():
        assert rpc_result(url, "eth_getBalance", [a, at]) == bal, f"balance of {a} at {at}"
    for a, nonce in snap["nonces"].items():
        assert rpc_result(url, "eth_getTransactionCount", [a, at]) == nonce, f"nonce of {a} at {at}"
    token = snap["token"]
    for a, word in snap["token_balances"].items():
        call = {"to": token, "data": "0x70a08231" + "00" * 12 + a[2:].lower()}
        assert rpc_result(url, "eth_call", [call, at]) == word, f"token balance of {a} at {at}"
    assert rpc_result(url, "eth_getCode", [token, at]) == snap["code"]
    for h, receipt in snap["receipts"].items():
        assert rpc_result(url, "eth_getTransactionReceipt", [h]) == receipt, h
    for h, tx in snap["txs"].items():
        assert rpc_result(url, "eth_getTransactionByHash", [h]) == tx, h
    logs = rpc_result(url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": at, "address": token}])
    assert logs == snap["logs"]


def goes_on(node: Node, token, snap: dict) -> list[str]:
    """New blocks follow and new transactions are mined, on top of the recorded chain."""
    w3 = node.web3()
    head = w3.eth.block_number
    wait_for_block(w3, head + 2, timeout=10)
    # Nonces continue from the recorded state.
    assert w3.eth.get_transaction_count(OWNER.address, "pending") >= int(snap["nonces"][OWNER.address], 16)
    recipient = fresh_address()
    payer_before = w3.eth.get_balance(PAYER.address)
    h_eth = send_tx(w3, PAYER, {"to": recipient, "value": 12345, "gas": 21_000})
    h_tok = send_token_transfer(w3, token, OWNER, recipient, 9)
    r_eth, r_tok = wait_receipt(w3, h_eth), wait_receipt(w3, h_tok)
    assert r_eth["status"] == 1 and r_tok["status"] == 1
    assert r_eth["blockNumber"] > snap["head"] and r_tok["blockNumber"] > snap["head"]
    assert w3.eth.get_balance(recipient) == 12345
    assert w3.eth.get_balance(PAYER.address) == payer_before - 12345 - r_eth["gasUsed"] * r_eth["effectiveGasPrice"]
    assert token.functions.balanceOf(recipient).call() == 9
    # The new block's parent chain reaches the recorded block.
    blk = w3.eth.get_block(r_eth["blockNumber"])
    while blk["number"] > snap["head"]:
        blk = w3.eth.get_block(blk["parentHash"])
    assert hexstr(blk["hash"]) == snap["block"]["hash"]
    return [h_eth, h_tok]


@pytest.mark.timeout(180)
def test_restart_keeps_chain(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    node = Node(tmp_path / "logs", data_dir=data_dir, name="restart")
    try:
        node.start()
        w3 = node.web3()
        token, deploy_receipt, deploy_hash = deploy_token(w3, OWNER)
        recipients = [fresh_address() for _ in range(3)]
        hashes = [deploy_hash] + make_activity(w3, token, recipients)
        addresses = [OWNER.address, HOLDER.address, PAYER.address] + recipients

        for round_, sig in ((1, signal.SIGTERM), (2, signal.SIGKILL)):
            snap = snapshot(node, token.address, hashes, addresses)
            # The mint, a transfer to each recipient and to HOLDER, and one more per earlier round.
            assert len(snap["logs"]) == 1 + len(recipients) + 1 + (round_ - 1)
            code = node.stop(sig)
            if sig == signal.SIGTERM:
                assert code == 0, f"SIGTERM must stop the node cleanly, exit code {code}\n{node.stderr_tail()}"
            else:
                assert code == -signal.SIGKILL
            node.start()
            verify(node, snap)
            w3 = node.web3()
            token = w3.eth.contract(address=token.address, abi=token.abi)
            hashes += goes_on(node, token, snap)
    finally:
        node.stop(signal.SIGTERM)
