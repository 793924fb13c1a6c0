//! Trie nodes: their in-memory form, Ethereum's RLP encoding, and a strict decoder.
//!
//! Every key in a secure trie is a 32-byte hash, so every path is exactly 64 nibbles long. The
//! decoder is told how many nibbles of the key remain at the node's position and rejects nodes
//! that cannot occur at that depth (a leaf that ends early or late, an extension that runs past
//! the key, a branch at the end of the key, a branch holding a value). The update and proof
//! code relies on this: a node that decoded fine always leaves a well-formed path to walk.

use alloy_primitives::B256;
use alloy_rlp::{Encodable, Header, EMPTY_STRING_CODE};

/// Nibbles in a key: keys are 32-byte hashes.
pub(super) const KEY_NIBBLES: usize = 64;

/// RLP items in a branch node: 16 children and a value.
const BRANCH_ITEMS: usize = 17;

/// Splits a 32-byte key into its 64 nibbles, high nibble first.
pub(super) fn key_nibbles(key: &B256) -> [u8; KEY_NIBBLES] {
    let mut out = [0u8; KEY_NIBBLES];
    for (i, byte) in key.iter().enumerate() {
        out[2 * i] = byte >> 4;
        out[2 * i + 1] = byte & 0x0f;
    }
    out
}

/// A trie node in memory. Paths hold one nibble per byte.
#[derive(Debug)]
pub(super) enum Node {
    /// The rest of a key and its (non-empty) value.
    Leaf { path: Vec<u8>, value: Vec<u8> },
    /// A shared run of nibbles leading to a branch.
    Extension { path: Vec<u8>, child: Child },
    /// Sixteen children, one per next nibble. Never holds a value: with fixed-length keys no key
    /// ends at a branch.
    Branch { children: Box<[Child; 16]> },
}

/// A reference from a parent (or from the trie itself, for the root) to a node.
#[derive(Debug, Default)]
pub(super) enum Child {
    #[default]
    Empty,
    /// A node in the store that has not been loaded.
    Stored(B256),
    /// A node in memory. `clean` is its hash while it is unchanged since it was loaded from the
    /// store, so committing it neither re-encodes nor re-emits it. Nodes that were embedded in
    /// their parent have no hash of their own and are always re-encoded (they are tiny).
    Node {
        node: Box<Node>,
        clean: Option<B256>,
    },
}

impl Child {
    /// A node created or changed in memory.
    pub(super) fn dirty(node: Node) -> Self {
        Self::Node {
            node: Box::new(node),
            clean: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }
}

/// How a parent refers to an encoded child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NodeRef {
    /// keccak256 of the child's RLP, for RLP of 32 bytes or more.
    Hash(B256),
    /// The child's RLP itself, embedded in the parent, for RLP shorter than 32 bytes.
    Inline(Vec<u8>),
}

impl NodeRef {
    fn length(&self) -> usize {
        match self {
            Self::Hash(_) => 1 + 32,
            Self::Inline(rlp) => rlp.len(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Hash(hash) => hash.encode(out),
            Self::Inline(rlp) => out.extend_from_slice(rlp),
        }
    }
}

/// Hex-prefix encoding of a path (Yellow Paper, appendix C): a flag nibble (2 for a leaf, plus 1
/// when the path has odd length), a padding nibble for even paths, then the path packed.
pub(super) fn hex_prefix(path: &[u8], leaf: bool) -> Vec<u8> {
    let flag = if leaf { 2 } else { 0 };
    let mut out = Vec::with_capacity(path.len() / 2 + 1);
    let rest = if path.len() % 2 == 1 {
        out.push(((flag + 1) << 4) | path[0]);
        &path[1..]
    } else {
        out.push(flag << 4);
        path
    };
    out.extend(rest.chunks_exact(2).map(|pair| (pair[0] << 4) | pair[1]));
    out
}

/// Inverse of [`hex_prefix`]: the nibbles and whether the path belongs to a leaf.
fn decode_hex_prefix(bytes: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let (&first, rest) = bytes.split_first().ok_or("empty hex-prefix path")?;
    let flag = first >> 4;
    if flag > 3 {
        return Err(format!("hex-prefix flag {flag} out of range"));
    }
    let mut nibbles = Vec::with_capacity(2 * rest.len() + 1);
    if flag & 1 == 1 {
        nibbles.push(first & 0x0f);
    } else if first & 0x0f != 0 {
        return Err("non-zero padding nibble in even hex-prefix path".into());
    }
    for byte in rest {
        nibbles.push(byte >> 4);
        nibbles.push(byte & 0x0f);
    }
    Ok((nibbles, flag & 2 == 2))
}

fn list_header(payload_length: usize, out: &mut Vec<u8>) {
    Header {
        list: true,
        payload_length,
    }
    .encode(out);
}

/// RLP of a leaf: `[hex_prefix(path, leaf), value]`.
pub(super) fn encode_leaf(path: &[u8], value: &[u8]) -> Vec<u8> {
    let path = hex_prefix(path, true);
    let payload = path.as_slice().length() + value.length();
    let mut out = Vec::with_capacity(payload + 3);
    list_header(payload, &mut out);
    path.as_slice().encode(&mut out);
    value.encode(&mut out);
    out
}

/// RLP of an extension: `[hex_prefix(path, extension), child]`.
pub(super) fn encode_extension(path: &[u8], child: &NodeRef) -> Vec<u8> {
    let path = hex_prefix(path, false);
    let payload = path.as_slice().length() + child.length();
    let mut out = Vec::with_capacity(payload + 3);
    list_header(payload, &mut out);
    path.as_slice().encode(&mut out);
    child.encode(&mut out);
    out
}

/// RLP of a branch: 16 child references (the empty string for no child) and an empty value.
pub(super) fn encode_branch(children: &[Option<NodeRef>; 16]) -> Vec<u8> {
    let payload: usize = children
        .iter()
        .map(|child| child.as_ref().map_or(1, NodeRef::length))
        .sum::<usize>()
        + 1;
    let mut out = Vec::with_capacity(payload + 3);
    list_header(payload, &mut out);
    for child in children {
        match child {
            Some(child) => child.encode(&mut out),
            None => out.push(EMPTY_STRING_CODE),
        }
    }
    out.push(EMPTY_STRING_CODE);
    out
}

/// Decodes a node found where `remaining` nibbles of the key are still to be matched.
/// Embedded children are decoded too; hashed children are left as [`Child::Stored`].
pub(super) fn decode_node(rlp: &[u8], remaining: usize) -> Result<Node, String> {
    let mut buf = rlp;
    let payload = Header::decode_bytes(&mut buf, true).map_err(|e| format!("node RLP: {e}"))?;
    if !buf.is_empty() {
        return Err("trailing bytes after node".into());
    }
    let mut items = [&[][..]; BRANCH_ITEMS];
    let mut count = 0;
    let mut rest = payload;
    while !rest.is_empty() {
        if count == BRANCH_ITEMS {
            return Err("node has more than 17 items".into());
        }
        let start = rest;
        let header = Header::decode(&mut rest).map_err(|e| format!("node item RLP: {e}"))?;
        // `Header::decode` leaves a single-byte string in place and has checked the length.
        rest = rest
            .get(header.payload_length..)
            .ok_or("node item overruns the node")?;
        items[count] = &start[..start.len() - rest.len()];
        count += 1;
    }
    match count {
        2 => decode_short(items[0], items[1], remaining),
        BRANCH_ITEMS => decode_branch(&items, remaining),
        n => Err(format!("node has {n} items; expected 2 or 17")),
    }
}

fn string_item(item: &[u8]) -> Result<&[u8], String> {
    let mut buf = item;
    Header::decode_bytes(&mut buf, false).map_err(|e| format!("expected an RLP string: {e}"))
}

fn decode_short(path: &[u8], second: &[u8], remaining: usize) -> Result<Node, String> {
    let (path, leaf) = decode_hex_prefix(string_item(path)?)?;
    if leaf {
        if path.len() != remaining {
            return Err(format!(
                "leaf path has {} nibbles where {remaining} remain of the key",
                path.len()
            ));
        }
        let value = string_item(second)?;
        if value.is_empty() {
            return Err("leaf with an empty value".into());
        }
        return Ok(Node::Leaf {
            path,
            value: value.to_vec(),
        });
    }
    if path.is_empty() || path.len() >= remaining {
        return Err(format!(
            "extension path has {} nibbles where {remaining} remain of the key",
            path.len()
        ));
    }
    let child = decode_child(second, remaining - path.len())?;
    match &child {
        Child::Stored(_) => {}
        Child::Node { node, .. } if matches!(**node, Node::Branch { .. }) => {}
        Child::Empty => return Err("extension without a child".into()),
        Child::Node { .. } => return Err("extension whose child is not a branch".into()),
    }
    Ok(Node::Extension { path, child })
}

fn decode_branch(items: &[&[u8]; BRANCH_ITEMS], remaining: usize) -> Result<Node, String> {
    if remaining == 0 {
        return Err("branch below the end of the key".into());
    }
    if !string_item(items[16])?.is_empty() {
        return Err(
            "branch with a value; keys are fixed-length, so no key ends at a branch".into(),
        );
    }
    let mut children: Box<[Child; 16]> = Box::default();
    for (slot, item) in children.iter_mut().zip(items) {
        *slot = decode_child(item, remaining - 1)?;
    }
    if children.iter().filter(|child| !child.is_empty()).count() < 2 {
        return Err("branch with fewer than two children".into());
    }
    Ok(Node::Branch { children })
}

/// A child reference: the empty string, a 32-byte hash, or an embedded node (a list shorter
/// than 32 bytes; a longer one would have been referenced by hash).
fn decode_child(item: &[u8], remaining: usize) -> Result<Child, String> {
    if item
        .first()
        .is_some_and(|&b| b >= alloy_rlp::EMPTY_LIST_CODE)
    {
        if item.len() >= 32 {
            return Err(format!(
                "embedded node of {} bytes; must be under 32",
                item.len()
            ));
        }
        // Embedded nodes have no hash of their own, so they are never "clean".
        return Ok(Child::dirty(decode_node(item, remaining)?));
    }
    let bytes = string_item(item)?;
    match bytes.len() {
        0 => Ok(Child::Empty),
        32 => Ok(Child::Stored(B256::from_slice(bytes))),
        n => Err(format!("child reference of {n} bytes; expected 0 or 32")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::hex;

    #[test]
    fn hex_prefix_matches_yellow_paper_examples() {
        // Examples from the Ethereum wiki's "Patricia Tree" page.
        assert_eq!(hex_prefix(&[1, 2, 3, 4, 5], false), hex!("112345"));
        assert_eq!(hex_prefix(&[0, 1, 2, 3, 4, 5], false), hex!("00012345"));
        assert_eq!(
            hex_prefix(&[0, 0xf, 1, 0xc, 0xb, 8], true),
            hex!("200f1cb8")
        );
        assert_eq!(hex_prefix(&[0xf, 1, 0xc, 0xb, 8], true), hex!("3f1cb8"));
        for (path, leaf) in [
            (vec![1, 2, 3, 4, 5], false),
            (vec![0, 0xf, 1], true),
            (vec![], true),
        ] {
            assert_eq!(
                decode_hex_prefix(&hex_prefix(&path, leaf)).unwrap(),
                (path, leaf)
            );
        }
        assert!(
            decode_hex_prefix(&hex!("01")).is_err(),
            "padding nibble must be zero"
        );
        assert!(decode_hex_prefix(&hex!("4f")).is_err(), "flag out of range");
    }

    #[test]
    fn nodes_round_trip_and_reject_impossible_shapes() {
        let leaf = encode_leaf(&[0xa; 3], &[0x01]);
        assert_eq!(leaf, hex!("c4823aaa01"));
        assert!(
            matches!(decode_node(&leaf, 3), Ok(Node::Leaf { ref path, .. }) if path == &[0xa; 3])
        );
        assert!(
            decode_node(&leaf, 4).is_err(),
            "leaf must end at the end of the key"
        );

        let mut children: [Option<NodeRef>; 16] = Default::default();
        children[1] = Some(NodeRef::Inline(encode_leaf(&[2], &[7])));
        children[9] = Some(NodeRef::Hash(B256::repeat_byte(0x55)));
        let branch = encode_branch(&children);
        match decode_node(&branch, 2).unwrap() {
            Node::Branch { children } => {
                assert!(matches!(children[1], Child::Node { ref node, clean: None }
                    if matches!(**node, Node::Leaf { .. })));
                assert!(matches!(children[9], Child::Stored(h) if h == B256::repeat_byte(0x55)));
                assert_eq!(children.iter().filter(|c| !c.is_empty()).count(), 2);
            }
            other => panic!("decoded {other:?}"),
        }
        assert!(
            decode_node(&branch, 0).is_err(),
            "no branch after the last nibble"
        );

        let ext = encode_extension(&[1, 2], &NodeRef::Hash(B256::repeat_byte(1)));
        assert!(matches!(decode_node(&ext, 10), Ok(Node::Extension { .. })));
        assert!(
            decode_node(&ext, 2).is_err(),
            "extension must leave room for its branch"
        );
        let ext_to_leaf = encode_extension(&[1], &NodeRef::Inline(encode_leaf(&[2], &[7])));
        assert!(
            decode_node(&ext_to_leaf, 2).is_err(),
            "extension child must be a branch"
        );

        let mut trailing = leaf.clone();
        trailing.push(0);
        assert!(decode_node(&trailing, 3).is_err());
        assert!(decode_node(&hex!("c3808080"), 3).is_err(), "three items");
    }
}
