"""Fee accounting, exactly: for legacy, EIP-2930 and EIP-1559 transfers the sender pays
gasUsed * effectiveGasPrice + value, the recipient gains value, and the block's miner gains
exactly the tips of the block's transactions (the base fee is burnt). Plus base-fee evolution,
eth_feeHistory, eth_gasPrice / eth_maxPriorityFeePerGas and the pending nonce."""

from __future__ import annotations

import time

from rpc_helpers import (
    BASE_FEE_FLOOR,
    BLOCK_GAS_LIMIT,
    CHAIN_ID,
    GWEI,
    base_fee,
    dev_account,
    fresh_address,
    hexstr,
    rpc,
    rpc_result,
    send_tx,
    wait_receipt,
)

LEGACY = dev_account(2)
ACCESS_LIST = dev_account(3)
DYNAMIC = dev_account(4)
PENDING = dev_account(5)
BURNER = dev_account(11)
BLOCK_INTERVAL = 0.25  # a little more than the node's 200 ms block time


def next_base_fee(parent) -> int:
    """EIP-1559 with elasticity 2, change denominator 8, and the 1 gwei floor."""
    target = parent["gasLimit"] // 2
    base, used = parent["baseFeePerGas"], parent["gasUsed"]
    if used == target:
        nxt = base
    elif used > target:
        nxt = base + max(base * (used - target) // target // 8, 1)
    else:
        nxt = base - base * (target - used) // target // 8
    return max(nxt, BASE_FEE_FLOOR)


def check_fee_accounting(w3, url, tx_hash, sender, recipient, value):
    """All the exact balance identities for one mined transaction; returns (receipt, tx, block)."""
    receipt = wait_receipt(w3, tx_hash)
    n = receipt["blockNumber"]
    block = w3.eth.get_block(n)
    tx = w3.eth.get_transaction(tx_hash)
    base = block["baseFeePerGas"]
    assert base >= BASE_FEE_FLOOR

    # Sender: exactly gas * price + value, between the block before and the block.
    paid = w3.eth.get_balance(sender, n - 1) - w3.eth.get_balance(sender, n)
    assert paid == receipt["gasUsed"] * receipt["effectiveGasPrice"] + value
    # Recipient: exactly value.
    if recipient is not None:
        assert w3.eth.get_balance(recipient, n) - w3.eth.get_balance(recipient, n - 1) == value

    # The block's receipts, in block order, the same as one by one.
    receipts = w3.eth.get_block_receipts(n)
    assert [r["transactionHash"] for r in receipts] == list(block["transactions"])
    assert receipts[receipt["transactionIndex"]] == receipt
    raw_by_number = rpc_result(url, "eth_getBlockReceipts", [hex(n)])
    raw_by_hash = rpc_result(url, "eth_getBlockReceipts", [hexstr(block["hash"])])
    assert raw_by_number == raw_by_hash
    assert len(raw_by_number) == len(receipts)
    cumulative = 0
    for r in receipts:
        cumulative += r["gasUsed"]
        assert r["cumulativeGasUsed"] == cumulative
        assert r["effectiveGasPrice"] >= base
    assert block["gasUsed"] == cumulative

    # Miner: exactly the sum of the tips; the base fee is burnt.
    miner = block["miner"]
    assert miner not in (sender, recipient)
    tips = sum(r["gasUsed"] * (r["effectiveGasPrice"] - base) for r in receipts)
    assert w3.eth.get_balance(miner, n) - w3.eth.get_balance(miner, n - 1) == tips

    # The transaction object agrees with the receipt.
    assert tx["blockNumber"] == n and tx["blockHash"] == block["hash"]
    assert tx["from"] == sender == receipt["from"]
    assert tx["value"] == value
    assert receipt["type"] == tx["type"]
    return receipt, tx, block


def test_legacy_transfer(w3, url):
    recipient = fresh_address()
    value = 123_456_789_000_000_001
    price = max(3 * GWEI, 2 * base_fee(w3))
    h = send_tx(w3, LEGACY, {"to": recipient, "value": value, "gas": 21_000, "gasPrice": price})
    receipt, tx, block = check_fee_accounting(w3, url, h, LEGACY.address, recipient, value)
    assert receipt["status"] == 1
    assert receipt["type"] == 0
    assert receipt["gasUsed"] == 21_000
    assert receipt["effectiveGasPrice"] == price == tx["gasPrice"]
    assert tx["v"] in (CHAIN_ID * 2 + 35, CHAIN_ID * 2 + 36), "EIP-155 v"
    assert rpc_result(url, "eth_getTransactionCount", [LEGACY.address, hex(block["number"])]) == hex(tx["nonce"] + 1)


def test_access_list_transfer(w3, url):
    recipient = fresh_address()
    value = 987_654_321
    price = max(3 * GWEI, 2 * base_fee(w3))
    access_list = [
        {"address": recipient, "storageKeys": ["0x" + "00" * 31 + "01"]},
        {"address": fresh_address(), "storageKeys": []},
    ]
    h = send_tx(
        w3,
        ACCESS_LIST,
        {"to": recipient, "value": value, "gas": 40_000, "gasPrice": price, "accessList": access_list},
    )
    receipt, tx, _ = check_fee_accounting(w3, url, h, ACCESS_LIST.address, recipient, value)
    assert receipt["status"] == 1
    assert receipt["type"] == 1
    # Intrinsic gas: 21000 + 2400 per address + 1900 per storage key (EIP-2930).
    assert receipt["gasUsed"] == 21_000 + 2 * 2_400 + 1 * 1_900
    assert receipt["effectiveGasPrice"] == price == tx["gasPrice"]
    assert tx["chainId"] == CHAIN_ID
    assert [(a["address"], [hexstr(k) for k in a["storageKeys"]]) for a in tx["accessList"]] == [
        (a["address"], a["storageKeys"]) for a in access_list
    ]


def test_dynamic_fee_transfer(w3, url):
    recipient = fresh_address()
    value = 10**18 + 7
    tip = 1 * GWEI
    max_fee = 2 * base_fee(w3) + tip
    h = send_tx(
        w3,
        DYNAMIC,
        {"to": recipient, "value": value, "gas": 21_000, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip},
    )
    receipt, tx, block = check_fee_accounting(w3, url, h, DYNAMIC.address, recipient, value)
    assert receipt["status"] == 1
    assert receipt["type"] == 2
    assert receipt["gasUsed"] == 21_000
    assert receipt["effectiveGasPrice"] == min(max_fee, block["baseFeePerGas"] + tip)
    assert tx["maxFeePerGas"] == max_fee and tx["maxPriorityFeePerGas"] == tip
    # geth reports a mined dynamic-fee transaction's gasPrice as its effective price.
    assert tx["gasPrice"] == receipt["effectiveGasPrice"]
    assert tx["chainId"] == CHAIN_ID and tx["accessList"] == []


def test_dynamic_fee_capped_by_max_fee(w3, url):
    """maxFee < baseFee + tip: the price is maxFee and the miner gets only maxFee - baseFee."""
    recipient = fresh_address()
    value = 5
    base = base_fee(w3)
    tip = 1 * GWEI
    max_fee = base + tip // 2
    h = send_tx(
        w3,
        DYNAMIC,
        {"to": recipient, "value": value, "gas": 21_000, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip},
    )
    receipt, _, block = check_fee_accounting(w3, url, h, DYNAMIC.address, recipient, value)
    assert receipt["status"] == 1
    assert receipt["effectiveGasPrice"] == min(max_fee, block["baseFeePerGas"] + tip)
    if block["baseFeePerGas"] == base:
        assert receipt["effectiveGasPrice"] == max_fee


def test_gas_price_and_priority_fee(w3, url):
    gp = w3.eth.gas_price
    tip = w3.eth.max_priority_fee
    assert isinstance(gp, int) and isinstance(tip, int)
    assert gp >= BASE_FEE_FLOOR
    assert tip >= 0
    for method in ("eth_gasPrice", "eth_maxPriorityFeePerGas"):
        v = rpc_result(url, method)
        assert isinstance(v, str) and v.startswith("0x") and int(v, 16) >= 0
    # A wallet's default fees get a transaction mined.
    recipient = fresh_address()
    h = send_tx(
        w3,
        DYNAMIC,
        {"to": recipient, "value": 1, "gas": 21_000, "maxPriorityFeePerGas": tip,
         "maxFeePerGas": 2 * base_fee(w3) + tip},
    )  # fmt: skip
    receipt, _, _ = check_fee_accounting(w3, url, h, DYNAMIC.address, recipient, 1)
    assert receipt["status"] == 1


def expected_rewards(w3, number: int, percentiles: list[float]) -> list[int]:
    """geth's eth_feeHistory reward: effective tips sorted, weighted by gasUsed."""
    block = w3.eth.get_block(number)
    if not block["transactions"]:
        return [0] * len(percentiles)
    receipts = w3.eth.get_block_receipts(number)
    base = block["baseFeePerGas"]
    txs = sorted(
        ((r["effectiveGasPrice"] - base, r["gasUsed"]) for r in receipts), key=lambda t: t[0]
    )
    out = []
    idx, total = 0, txs[0][1]
    for p in percentiles:
        threshold = int(block["gasUsed"] * p / 100)
        while total < threshold and idx < len(txs) - 1:
            idx += 1
            total += txs[idx][1]
        out.append(txs[idx][0])
    return out


def test_fee_history(w3, url):
    # Put a transaction in a block so that one reward row is not all zeros.
    tip = 2 * GWEI
    h = send_tx(
        w3, DYNAMIC,
        {"to": fresh_address(), "value": 1, "gas": 21_000, "maxFeePerGas": 3 * base_fee(w3) + tip,
         "maxPriorityFeePerGas": tip},
    )  # fmt: skip
    tx_block = wait_receipt(w3, h)["blockNumber"]
    head = w3.eth.block_number
    count = head - tx_block + 3
    percentiles = [10, 50, 90]
    fh = rpc_result(url, "eth_feeHistory", [hex(count), hex(head), percentiles])
    oldest = int(fh["oldestBlock"], 16)
    assert oldest == head - count + 1
    assert len(fh["baseFeePerGas"]) == count + 1
    assert len(fh["gasUsedRatio"]) == count
    assert len(fh["reward"]) == count and all(len(r) == len(percentiles) for r in fh["reward"])
    blocks = [w3.eth.get_block(n) for n in range(oldest, head + 1)]
    for i, blk in enumerate(blocks):
        assert int(fh["baseFeePerGas"][i], 16) == blk["baseFeePerGas"]
        assert fh["gasUsedRatio"][i] == blk["gasUsed"] / blk["gasLimit"]
        assert [int(x, 16) for x in fh["reward"][i]] == expected_rewards(w3, blk["number"], percentiles)
    # The last entry is the base fee of the block after `head`.
    assert int(fh["baseFeePerGas"][-1], 16) == next_base_fee(blocks[-1])
    assert [int(x, 16) for x in fh["reward"][tx_block - oldest]] == [tip] * 3

    # Through web3.py, the same numbers.
    wfh = w3.eth.fee_history(count, head, percentiles)
    assert wfh["oldestBlock"] == oldest
    assert wfh["baseFeePerGas"] == [int(x, 16) for x in fh["baseFeePerGas"]]
    # Without percentiles: no reward field (or an empty one), same base fees.
    bare = rpc_result(url, "eth_feeHistory", [hex(2), "latest", []])
    assert len(bare["baseFeePerGas"]) == 3 and len(bare["gasUsedRatio"]) == 2
    assert not bare.get("reward")


def test_base_fee_follows_eip1559(w3, url):
    """Consecutive blocks: baseFee(n+1) == next_base_fee(block n), across a block that uses
    more than the 15M gas target (base fee rises above the floor), then back down."""
    # A creation whose init code is INVALID (0xfe): it fails and burns all 20M gas.
    h = send_tx(w3, BURNER, {"data": "0xfe", "gas": 20_000_000})
    receipt, _, block = check_fee_accounting(w3, url, h, BURNER.address, None, 0)
    assert receipt["status"] == 0
    assert receipt["gasUsed"] == 20_000_000
    assert block["gasUsed"] >= 20_000_000
    n = receipt["blockNumber"]
    head = w3.eth.block_number
    deadline = time.monotonic() + 10
    while head < n + 4 and time.monotonic() < deadline:
        time.sleep(0.1)
        head = w3.eth.block_number
    assert head >= n + 4
    blocks = [w3.eth.get_block(i) for i in range(n - 1, n + 5)]
    for parent, child in zip(blocks, blocks[1:]):
        assert child["baseFeePerGas"] == next_base_fee(parent), (
            f"base fee of block {child['number']}: {child['baseFeePerGas']} != EIP-1559 "
            f"{next_base_fee(parent)} (parent gasUsed {parent['gasUsed']}, base {parent['baseFeePerGas']})"
        )
    assert blocks[2]["baseFeePerGas"] > blocks[1]["baseFeePerGas"], "a >target block raises the base fee"
    for blk in blocks:
        assert blk["gasLimit"] == BLOCK_GAS_LIMIT


def test_pending_nonce_counts_pending_tx(w3, url):
    n = w3.eth.get_transaction_count(PENDING.address, "latest")
    assert w3.eth.get_transaction_count(PENDING.address, "pending") == n
    h = send_tx(w3, PENDING, {"to": fresh_address(), "value": 1, "gas": 21_000, "nonce": n})
    latest = w3.eth.get_transaction_count(PENDING.address, "latest")
    pending = w3.eth.get_transaction_count(PENDING.address, "pending")
    receipt = rpc_result(url, "eth_getTransactionReceipt", [h])
    assert pending >= latest
    if receipt is None:  # not mined yet at any of the three reads
        assert latest == n and pending == n + 1
    wait_receipt(w3, h)
    assert w3.eth.get_transaction_count(PENDING.address, "latest") == n + 1
    assert w3.eth.get_transaction_count(PENDING.address, "pending") == n + 1


def test_pending_nonce_ignores_nonce_gap(w3, url):
    """A transaction after a nonce gap waits (queued) and does not count as pending."""
    n = w3.eth.get_transaction_count(PENDING.address, "latest")
    later = send_tx(w3, PENDING, {"to": fresh_address(), "value": 2, "gas": 21_000, "nonce": n + 1})
    for _ in range(4):  # over several blocks
        assert w3.eth.get_transaction_count(PENDING.address, "pending") == n
        assert w3.eth.get_transaction_count(PENDING.address, "latest") == n
        assert rpc_result(url, "eth_getTransactionReceipt", [later]) is None
        time.sleep(BLOCK_INTERVAL)
    tx = rpc_result(url, "eth_getTransactionByHash", [later])
    assert tx is not None, "an accepted transaction is known while it waits"
    assert tx["blockHash"] is None and tx["blockNumber"] is None and tx["transactionIndex"] is None
    assert tx["nonce"] == hex(n + 1)
    # Filling the gap lets both through, in nonce order.
    first = send_tx(w3, PENDING, {"to": fresh_address(), "value": 3, "gas": 21_000, "nonce": n})
    r1, r2 = wait_receipt(w3, first), wait_receipt(w3, later)
    assert r1["status"] == 1 and r2["status"] == 1
    assert (r1["blockNumber"], r1["transactionIndex"]) < (r2["blockNumber"], r2["transactionIndex"])
    assert w3.eth.get_transaction_count(PENDING.address, "latest") == n + 2
    assert w3.eth.get_transaction_count(PENDING.address, "pending") == n + 2
    assert rpc(url, "eth_getTransactionCount", [PENDING.address, "pending"])["result"] == hex(n + 2)

