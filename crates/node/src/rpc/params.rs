//! Parsing of JSON-RPC parameters into typed requests. Every malformed parameter becomes an
//! `invalid params` error (-32602) that says which parameter and why.

use alloy_eips::eip2930::AccessList;
use alloy_primitives::{Address, Bytes, B256, U256, U64};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;
use tessera_execution::CallRequest;

pub const INVALID_PARAMS: i32 = -32602;

pub fn invalid_params(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(INVALID_PARAMS, message.into(), None::<()>)
}

/// Positional parameters, taken one at a time.
#[derive(Debug)]
pub struct Args {
    values: Vec<Value>,
    next: usize,
}

impl Args {
    pub fn new(params: &Params<'_>) -> Result<Self, ErrorObjectOwned> {
        let values = match params.as_str() {
            None => Vec::new(),
            Some(raw) => match serde_json::from_str::<Value>(raw) {
                Ok(Value::Array(values)) => values,
                Ok(Value::Null) => Vec::new(),
                Ok(_) => return Err(invalid_params("params must be an array")),
                Err(e) => return Err(invalid_params(format!("params: {e}"))),
            },
        };
        Ok(Self { values, next: 0 })
    }

    /// The next parameter, which must be present.
    pub fn required<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, ErrorObjectOwned> {
        match self.optional(name)? {
            Some(v) => Ok(v),
            None => Err(invalid_params(format!(
                "missing value for required argument {} ({name})",
                self.next - 1
            ))),
        }
    }

    /// The next parameter; absent or null gives `None`.
    pub fn optional<T: DeserializeOwned>(
        &mut self,
        name: &str,
    ) -> Result<Option<T>, ErrorObjectOwned> {
        let index = self.next;
        self.next += 1;
        match self.values.get(index) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| invalid_params(format!("invalid argument {index} ({name}): {e}"))),
        }
    }

    /// Refuses parameters beyond those the method takes.
    pub fn finish(self) -> Result<(), ErrorObjectOwned> {
        if self.values.len() > self.next {
            return Err(invalid_params(format!(
                "too many arguments, want at most {}",
                self.next
            )));
        }
        Ok(())
    }
}

/// A block named by tag, number or hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockId {
    Latest,
    Pending,
    Earliest,
    Number(u64),
    Hash(B256),
}

impl<'de> Deserialize<'de> for BlockId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(d)?;
        match value {
            Value::String(s) => match s.as_str() {
                "latest" | "safe" | "finalized" => Ok(BlockId::Latest),
                "pending" => Ok(BlockId::Pending),
                "earliest" => Ok(BlockId::Earliest),
                _ if s.len() == 66 => s
                    .parse::<B256>()
                    .map(BlockId::Hash)
                    .map_err(D::Error::custom),
                _ => parse_quantity(&s)
                    .map(BlockId::Number)
                    .map_err(D::Error::custom),
            },
            Value::Object(map) => {
                if let Some(hash) = map.get("blockHash") {
                    let hash: B256 =
                        serde_json::from_value(hash.clone()).map_err(D::Error::custom)?;
                    Ok(BlockId::Hash(hash))
                } else if let Some(number) = map.get("blockNumber") {
                    let number: U64 =
                        serde_json::from_value(number.clone()).map_err(D::Error::custom)?;
                    Ok(BlockId::Number(number.to()))
                } else {
                    Err(D::Error::custom(
                        "block object needs blockHash or blockNumber",
                    ))
                }
            }
            other => Err(D::Error::custom(format!(
                "expected a block tag, number or hash, got {other}"
            ))),
        }
    }
}

/// A hex quantity ("0x1a"): no leading zeros are required to be absent, but the prefix is.
pub fn parse_quantity(s: &str) -> Result<u64, String> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("{s:?} is not a hex quantity (0x...) or block tag"))?;
    if digits.is_empty() {
        return Err("empty hex quantity".into());
    }
    u64::from_str_radix(digits, 16).map_err(|e| format!("bad hex quantity {s:?}: {e}"))
}

/// A quantity that clients send as hex, or sometimes as a JSON number.
#[derive(Debug, Clone, Copy)]
pub struct Quantity(pub u64);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) => parse_quantity(&s).map(Quantity).map_err(D::Error::custom),
            Value::Number(n) => n
                .as_u64()
                .map(Quantity)
                .ok_or_else(|| D::Error::custom("quantity must be a non-negative integer")),
            other => Err(D::Error::custom(format!(
                "expected a quantity, got {other}"
            ))),
        }
    }
}

/// The transaction object of `eth_call` and `eth_estimateGas`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallObject {
    pub from: Option<Address>,
    pub to: Option<Address>,
    pub gas: Option<U64>,
    pub gas_price: Option<U256>,
    pub max_fee_per_gas: Option<U256>,
    pub max_priority_fee_per_gas: Option<U256>,
    pub value: Option<U256>,
    pub data: Option<Bytes>,
    pub input: Option<Bytes>,
    pub access_list: Option<AccessList>,
    // Other fields clients send (nonce, type, chainId, ...) do not change a simulation and are
    // ignored, as geth does.
}

impl CallObject {
    pub fn into_request(self) -> Result<CallRequest, ErrorObjectOwned> {
        let fee = |v: Option<U256>, name: &str| -> Result<Option<u128>, ErrorObjectOwned> {
            v.map(|v| u128::try_from(v).map_err(|_| invalid_params(format!("{name} too large"))))
                .transpose()
        };
        if let (Some(data), Some(input)) = (&self.data, &self.input) {
            if data != input {
                return Err(invalid_params(
                    "both \"data\" and \"input\" are set and differ; set one",
                ));
            }
        }
        Ok(CallRequest {
            from: self.from.unwrap_or_default(),
            to: self.to,
            gas: self.gas.map(|g| g.to()),
            gas_price: fee(self.gas_price, "gasPrice")?,
            max_fee_per_gas: fee(self.max_fee_per_gas, "maxFeePerGas")?,
            max_priority_fee_per_gas: fee(self.max_priority_fee_per_gas, "maxPriorityFeePerGas")?,
            value: self.value.unwrap_or_default(),
            input: self.input.or(self.data).unwrap_or_default(),
            access_list: self.access_list.unwrap_or_default(),
        })
    }
}

/// One address or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The filter object of `eth_getLogs`, `eth_newFilter` and `logs` subscriptions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterObject {
    pub from_block: Option<BlockId>,
    pub to_block: Option<BlockId>,
    pub block_hash: Option<B256>,
    pub address: Option<OneOrMany<Address>>,
    pub topics: Option<Vec<Option<OneOrMany<B256>>>>,
}

impl FilterObject {
    pub fn addresses(&self) -> Vec<Address> {
        self.address
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
    }

    pub fn topics(&self) -> Vec<Vec<B256>> {
        self.topics
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.map(OneOrMany::into_vec).unwrap_or_default())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_parse() {
        let parse = |s: &str| serde_json::from_str::<BlockId>(s);
        assert_eq!(parse("\"latest\"").unwrap(), BlockId::Latest);
        assert_eq!(parse("\"0x10\"").unwrap(), BlockId::Number(16));
        assert_eq!(
            parse("{\"blockNumber\":\"0x2\"}").unwrap(),
            BlockId::Number(2)
        );
        assert!(matches!(
            parse(&format!("\"0x{}\"", "ab".repeat(32))).unwrap(),
            BlockId::Hash(_)
        ));
        assert!(parse("\"16\"").is_err());
        assert!(parse("{}").is_err());
        assert!(parse("true").is_err());
    }

    #[test]
    fn filter_topics_accept_null_single_and_lists() {
        let t = format!("\"0x{}\"", "11".repeat(32));
        let json = format!(
            "{{\"topics\":[null,{t},[{t},{t}]],\"address\":\"0x{}\"}}",
            "22".repeat(20)
        );
        let filter: FilterObject = serde_json::from_str(&json).unwrap();
        let topics = filter.topics();
        assert_eq!(topics.len(), 3);
        assert!(topics[0].is_empty());
        assert_eq!(topics[1].len(), 1);
        assert_eq!(topics[2].len(), 2);
        assert_eq!(filter.addresses().len(), 1);
    }
}
