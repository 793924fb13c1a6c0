//! Gossip topics: one per shard and message kind, named `/tessera/<chain>/shard/<id>/<kind>`.

use std::fmt;

use tessera_primitives::ShardId;

/// A gossip topic. The network knows which kind of message travels on a topic, not what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Transactions for the shard's mempool.
    Tx(ShardId),
    /// The shard's consensus messages (proposals, votes).
    Consensus(ShardId),
    /// Cross-shard messages destined for the shard.
    XShard(ShardId),
}

impl Topic {
    /// The three topics of `shard`.
    pub fn all(shard: ShardId) -> [Topic; 3] {
        [
            Topic::Tx(shard),
            Topic::Consensus(shard),
            Topic::XShard(shard),
        ]
    }

    /// The shard this topic belongs to.
    pub fn shard(&self) -> ShardId {
        match *self {
            Topic::Tx(s) | Topic::Consensus(s) | Topic::XShard(s) => s,
        }
    }

    /// The last component of the topic name.
    pub fn kind(&self) -> &'static str {
        match self {
            Topic::Tx(_) => "tx",
            Topic::Consensus(_) => "consensus",
            Topic::XShard(_) => "xshard",
        }
    }

    /// The gossipsub topic name on `chain`.
    pub fn name(&self, chain: &str) -> String {
        format!("/tessera/{chain}/shard/{}/{}", self.shard().0, self.kind())
    }

    /// Parses a topic name of `chain`; `None` for anything else, including other chains and
    /// non-canonical shard numbers (so one topic has exactly one name).
    pub fn parse(chain: &str, name: &str) -> Option<Topic> {
        let rest = name
            .strip_prefix("/tessera/")?
            .strip_prefix(chain)?
            .strip_prefix("/shard/")?;
        let (id, kind) = rest.split_once('/')?;
        let shard: u16 = id.parse().ok()?;
        if shard.to_string() != id {
            return None;
        }
        let shard = ShardId(shard);
        match kind {
            "tx" => Some(Topic::Tx(shard)),
            "consensus" => Some(Topic::Consensus(shard)),
            "xshard" => Some(Topic::XShard(shard)),
            _ => None,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard/{}/{}", self.shard().0, self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for shard in [0u16, 1, 7, u16::MAX] {
            for t in Topic::all(ShardId(shard)) {
                let name = t.name("1337");
                assert_eq!(Topic::parse("1337", &name), Some(t), "{name}");
                assert_eq!(Topic::parse("1338", &name), None);
                assert_eq!(Topic::parse("133", &name), None);
            }
        }
        assert_eq!(
            Topic::Consensus(ShardId(3)).name("9"),
            "/tessera/9/shard/3/consensus"
        );
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "/tessera/9/shard/3",
            "/tessera/9/shard/3/",
            "/tessera/9/shard/3/tx/",
            "/tessera/9/shard/03/tx",
            "/tessera/9/shard/+3/tx",
            "/tessera/9/shard/65536/tx",
            "/tessera/9/shard/-1/tx",
            "/tessera/9/shard//tx",
            "/tessera/9/shard/3/blocks",
            "tessera/9/shard/3/tx",
        ] {
            assert_eq!(Topic::parse("9", bad), None, "{bad}");
        }
    }
}
