"""eth_call and eth_estimateGas: revert reasons (web3's ContractLogicError and the raw code-3
error with its data), an estimate that is exactly enough, and calls against older blocks."""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode
from web3.exceptions import ContractLogicError

from rpc_helpers import (
    deploy_token,
    dev_account,
    error_string_data,
    fresh_address,
    hexstr,
    rpc,
    rpc_error,
    rpc_result,
    send_token_transfer,
    transfer_data,
    wait_receipt,
)

OWNER = dev_account(6)
OTHER = dev_account(7)


@pytest.fixture(scope="module")
def token(w3):
    token, _, _ = deploy_token(w3, OWNER)
    r = wait_receipt(w3, send_token_transfer(w3, token, OWNER, OTHER.address, 1000))
    assert r["status"] == 1
    return token


def word(n: int) -> str:
    return "0x" + abi_encode(["uint256"], [n]).hex()


def test_revert_reason_through_web3(token):
    with pytest.raises(ContractLogicError) as ei:
        token.functions.transfer(OWNER.address, 1001).call({"from": OTHER.address})
    assert "insufficient balance" in str(ei.value.message)
    assert hexstr(ei.value.data) == error_string_data("insufficient balance")

    with pytest.raises(ContractLogicError) as ei:
        token.functions.transfer(OWNER.address, 1001).estimate_gas({"from": OTHER.address})
    assert "insufficient balance" in str(ei.value.message)

    with pytest.raises(ContractLogicError) as ei:
        token.functions.transferFrom(OWNER.address, OTHER.address, 1).call({"from": OTHER.address})
    assert "insufficient allowance" in str(ei.value.message)
    # The same call that fits the balance is fine.
    assert token.functions.transfer(OWNER.address, 1000).call({"from": OTHER.address}) is True


@pytest.mark.parametrize("method", ["eth_call", "eth_estimateGas"])
def test_revert_raw_error(url, token, method):
    call = {"from": OTHER.address, "to": token.address, "data": transfer_data(token, OWNER.address, 1001)}
    params = [call, "latest"] if method == "eth_call" else [call]
    err = rpc_error(url, method, params)
    assert err["code"] == 3, err
    assert err["message"] == "execution reverted: insufficient balance", err
    assert isinstance(err.get("data"), str), err
    assert err["data"].lower() == error_string_data("insufficient balance")


def test_revert_without_reason(url, token):
    """Vyper reverts with empty data on an unknown selector."""
    call = {"from": OTHER.address, "to": token.address, "data": "0xdeadbeef"}
    err = rpc_error(url, "eth_call", [call, "latest"])
    assert err["message"].lower() == "execution reverted", err
    # geth answers an empty revert with -32000, a revert with data with 3.
    assert err["code"] in (3, -32000), err
    if "data" in err and err["data"] is not None:
        assert err["data"] == "0x", err
    with pytest.raises(ContractLogicError) as ei:
        token.w3.eth.call(call)
    assert "execution reverted" in str(ei.value.message)


def test_estimate_gas_is_exactly_enough(w3, url, token):
    recipient = fresh_address()
    call = {"from": OWNER.address, "to": token.address, "data": transfer_data(token, recipient, 5)}
    est = int(rpc_result(url, "eth_estimateGas", [call]), 16)
    assert est == w3.eth.estimate_gas(call)
    assert 21_000 < est < 100_000

    ok = rpc(url, "eth_call", [{**call, "gas": hex(est)}, "latest"])
    assert ok.get("result") == word(1), f"eth_call with gas = estimate must succeed: {ok}"
    short = rpc(url, "eth_call", [{**call, "gas": hex(est - 1)}, "latest"])
    assert "error" in short, f"eth_call with gas = estimate - 1 must fail, got {short}"

    # A real transaction with exactly the estimate succeeds.
    r = wait_receipt(w3, send_token_transfer(w3, token, OWNER, recipient, 5, gas=est))
    assert r["status"] == 1
    assert r["gasUsed"] <= est
    assert token.functions.balanceOf(recipient).call() == 5

    # A plain ETH transfer costs exactly 21000.
    plain = {"from": OWNER.address, "to": fresh_address(), "value": hex(1)}
    assert rpc_result(url, "eth_estimateGas", [plain]) == hex(21_000)


def test_call_at_older_blocks(w3, url, token):
    f = token.functions
    recipient = fresh_address()
    r1 = wait_receipt(w3, send_token_transfer(w3, token, OWNER, recipient, 10))
    r2 = wait_receipt(w3, send_token_transfer(w3, token, OWNER, recipient, 20))
    assert r1["status"] == 1 and r2["status"] == 1
    b1, b2 = r1["blockNumber"], r2["blockNumber"]
    assert b2 > b1

    assert f.balanceOf(recipient).call(block_identifier=b1 - 1) == 0
    assert f.balanceOf(recipient).call(block_identifier=b1) == 10
    assert f.balanceOf(recipient).call(block_identifier=b2 - 1) == 10
    assert f.balanceOf(recipient).call(block_identifier=b2) == 30
    assert f.balanceOf(recipient).call() == 30

    call = {"to": token.address, "data": token.encode_abi("balanceOf", args=[recipient])}
    assert rpc_result(url, "eth_call", [call, hex(b1)]) == word(10)
    assert rpc_result(url, "eth_call", [call, hex(b1 - 1)]) == word(0)
    # EIP-1898 block selectors.
    h1 = hexstr(r1["blockHash"])
    assert rpc_result(url, "eth_call", [call, {"blockHash": h1}]) == word(10)
    assert rpc_result(url, "eth_call", [call, {"blockNumber": hex(b2)}]) == word(30)
    # Before the token existed there is no code: an empty result.
    assert rpc_result(url, "eth_call", [call, "earliest"]) == "0x"

    # Account state at those blocks.
    paid = w3.eth.get_balance(OWNER.address, b1 - 1) - w3.eth.get_balance(OWNER.address, b1)
    assert paid == r1["gasUsed"] * r1["effectiveGasPrice"]
    assert w3.eth.get_transaction_count(OWNER.address, b1) == w3.eth.get_transaction_count(OWNER.address, b1 - 1) + 1
    assert w3.eth.get_transaction_count(OWNER.address, b2) == w3.eth.get_transaction_count(OWNER.address, b1) + 1
