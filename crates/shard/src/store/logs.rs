//! Log queries over the `logs_index` column family, for `eth_getLogs`.

use super::{corrupt, schema, schema::Cf, Store, StoreError};
use alloy_primitives::{keccak256, Address, Bytes, Log, B256};
use tessera_primitives::Receipt;

/// Which logs to return, with `eth_getLogs` semantics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// First block searched.
    pub from_block: u64,
    /// Last block searched (inclusive); blocks past the head are simply absent.
    pub to_block: u64,
    /// Logs emitted by any of these contracts; empty matches every address.
    pub addresses: Vec<Address>,
    /// `topics[i]` lists the accepted values of a log's topic at position `i`; an empty list
    /// (or a position past the end of `topics`) accepts anything, including no topic there.
    pub topics: Vec<Vec<B256>>,
}

impl LogFilter {
    /// Whether `log` passes the address and topic conditions (the block range aside).
    pub fn matches(&self, log: &Log) -> bool {
        (self.addresses.is_empty() || self.addresses.contains(&log.address))
            && self.topics.iter().enumerate().all(|(i, accepted)| {
                accepted.is_empty() || log.topics().get(i).is_some_and(|t| accepted.contains(t))
            })
    }
}

/// A log with the context `eth_getLogs` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub block_number: u64,
    pub block_hash: B256,
    /// Position of the emitting transaction in its block.
    pub tx_index: u32,
    pub tx_hash: B256,
    /// Position of the log among all logs of its block.
    pub log_index: u32,
    pub log: Log,
}

/// What a query needs of one block, loaded once per block.
struct BlockLogs {
    number: u64,
    hash: B256,
    transactions: Vec<Bytes>,
    receipts: Vec<Receipt>,
}

/// A log found through the index.
struct Hit {
    number: u64,
    log_index: u32,
    tx_index: u32,
    in_tx: u32,
}

impl Store {
    /// Logs matching `filter`, in chain order (block, then log index).
    ///
    /// With addresses, the by-address index is scanned for each; otherwise, with a topic
    /// condition, the by-topic index for the most selective position; otherwise every block in
    /// the range (up to the head) is read. Results are not capped: the caller bounds the range.
    pub fn logs(&self, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        if filter.from_block > filter.to_block {
            return Ok(Vec::new());
        }
        match self.index_hits(filter)? {
            Some(hits) => self.logs_from_hits(filter, hits),
            None => self.logs_by_scan(filter),
        }
    }

    /// Index entries that may match, sorted by (block, log index); `None` when the filter
    /// names no address and no topic, so no index applies.
    fn index_hits(&self, filter: &LogFilter) -> Result<Option<Vec<Hit>>, StoreError> {
        let prefixes: Vec<Vec<u8>> = if !filter.addresses.is_empty() {
            filter
                .addresses
                .iter()
                .map(schema::log_address_prefix)
                .collect()
        } else {
            let narrowest = (0u8..4)
                .zip(&filter.topics)
                .filter(|(_, accepted)| !accepted.is_empty())
                .min_by_key(|(_, accepted)| accepted.len());
            match narrowest {
                Some((position, accepted)) => accepted
                    .iter()
                    .map(|t| schema::log_topic_prefix(position, t))
                    .collect(),
                None => return Ok(None),
            }
        };
        let mut hits = Vec::new();
        for prefix in prefixes {
            let start = schema::log_key(&prefix, filter.from_block, 0);
            // Past every log index of `to_block`, before any key of `to_block + 1`.
            let mut end = schema::log_key(&prefix, filter.to_block, u32::MAX);
            end.push(0xff);
            for entry in self.scan(Cf::LogsIndex, &start, Some(&end))? {
                let (key, value) = entry?;
                let (number, log_index) = schema::decode_log_key_suffix(&key)
                    .map_err(|r| corrupt(Cf::LogsIndex, &key, r))?;
                let (tx_index, in_tx) = schema::decode_log_position(&value)
                    .map_err(|r| corrupt(Cf::LogsIndex, &key, r))?;
                hits.push(Hit {
                    number,
                    log_index,
                    tx_index,
                    in_tx,
                });
            }
        }
        hits.sort_unstable_by_key(|h| (h.number, h.log_index));
        hits.dedup_by_key(|h| (h.number, h.log_index));
        Ok(Some(hits))
    }

    fn logs_from_hits(
        &self,
        filter: &LogFilter,
        hits: Vec<Hit>,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut out = Vec::new();
        let mut block: Option<BlockLogs> = None;
        for hit in hits {
            let loaded = match block.take() {
                Some(b) if b.number == hit.number => b,
                _ => self.block_logs(hit.number)?,
            };
            let block = block.insert(loaded);
            let log = block
                .receipts
                .get(hit.tx_index as usize)
                .and_then(|r| r.logs.get(hit.in_tx as usize))
                .ok_or_else(|| {
                    corrupt(
                        Cf::Receipts,
                        &schema::block_key(hit.number),
                        format!(
                            "logs index points to log {} of transaction {}, which does not exist",
                            hit.in_tx, hit.tx_index
                        ),
                    )
                })?;
            if filter.matches(log) {
                out.push(block.entry(hit.tx_index, hit.log_index, log.clone())?);
            }
        }
        Ok(out)
    }

    fn logs_by_scan(&self, filter: &LogFilter) -> Result<Vec<LogEntry>, StoreError> {
        let Some((head, _)) = self.head()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for number in filter.from_block..=filter.to_block.min(head) {
            let block = self.block_logs(number)?;
            let mut log_index = 0u32;
            for (tx_index, receipt) in (0u32..).zip(&block.receipts) {
                for log in &receipt.logs {
                    if filter.matches(log) {
                        out.push(block.entry(tx_index, log_index, log.clone())?);
                    }
                    log_index += 1;
                }
            }
        }
        Ok(out)
    }

    /// A committed block's hash, transactions and receipts; missing parts mean corruption,
    /// since the index or the head said the block exists.
    fn block_logs(&self, number: u64) -> Result<BlockLogs, StoreError> {
        let key = schema::block_key(number);
        let missing = |cf: Cf| corrupt(cf, &key, format!("block {number} is indexed but missing"));
        let header = self.header(number)?.ok_or_else(|| missing(Cf::Headers))?;
        let transactions = self
            .block_transactions(number)?
            .ok_or_else(|| missing(Cf::Bodies))?;
        let receipts = self
            .receipts(number)?
            .ok_or_else(|| missing(Cf::Receipts))?;
        Ok(BlockLogs {
            number,
            hash: header.hash(),
            transactions,
            receipts,
        })
    }
}

impl BlockLogs {
    fn entry(&self, tx_index: u32, log_index: u32, log: Log) -> Result<LogEntry, StoreError> {
        let tx = self.transactions.get(tx_index as usize).ok_or_else(|| {
            corrupt(
                Cf::Bodies,
                &schema::block_key(self.number),
                format!("no transaction {tx_index} for its receipt"),
            )
        })?;
        Ok(LogEntry {
            block_number: self.number,
            block_hash: self.hash,
            tx_index,
            tx_hash: keccak256(tx),
            log_index,
            log,
        })
    }
}
