//! One Merkle-Patricia trie opened at a root, changed in memory, committed once.
//!
//! Opening a trie loads nothing. Reads and writes load the nodes on their key's path from the
//! store, on first touch, and keep them in memory, so a batch of changes shares the work on
//! common upper levels. Nothing is hashed until [`Trie::commit`], which encodes and hashes each
//! changed node exactly once, bottom-up, and hands the new nodes to a [`NodeSink`]. Nodes that
//! were only read keep the hash they were loaded under and are neither re-encoded nor emitted.
//!
//! The recursive operations take a child by value and give back its replacement, which keeps the
//! restructuring cases (splitting a leaf or an extension, collapsing a branch left with one
//! child) free of borrow juggling. If an operation fails (missing or malformed node), the trie is
//! left emptied and must be dropped; callers return the error anyway.

use super::node::{
    decode_node, encode_branch, encode_extension, encode_leaf, key_nibbles, Child, Node, NodeRef,
};
use super::{CommitmentError, NodeStore};
use alloy_primitives::{keccak256, map::B256Set, B256};
use std::mem;
use tessera_primitives::EMPTY_ROOT_HASH;

/// Collects the nodes a commit creates, each once, in the order they were hashed (children
/// before parents).
#[derive(Debug, Default)]
pub(super) struct NodeSink {
    nodes: Vec<(B256, Vec<u8>)>,
    seen: B256Set,
}

impl NodeSink {
    fn push(&mut self, rlp: Vec<u8>) -> B256 {
        let hash = keccak256(&rlp);
        // Identical subtrees (say, two contracts with the same storage) are emitted once.
        if self.seen.insert(hash) {
            self.nodes.push((hash, rlp));
        }
        hash
    }

    pub(super) fn into_nodes(self) -> Vec<(B256, Vec<u8>)> {
        self.nodes
    }
}

/// A trie being updated; see the module docs.
#[derive(Debug)]
pub(super) struct Trie<'s, S: ?Sized> {
    ctx: Ctx<'s, S>,
    root: Child,
}

impl<'s, S: NodeStore + ?Sized> Trie<'s, S> {
    /// Opens the trie with this root; [`EMPTY_ROOT_HASH`] opens an empty trie.
    pub(super) fn open(store: &'s S, root: B256) -> Self {
        let child = if root == EMPTY_ROOT_HASH {
            Child::Empty
        } else {
            Child::Stored(root)
        };
        Self {
            ctx: Ctx {
                store,
                opened_at: root,
            },
            root: child,
        }
    }

    /// The value under `key`, if any.
    pub(super) fn get(&mut self, key: &B256) -> Result<Option<Vec<u8>>, CommitmentError> {
        self.ctx.get(&mut self.root, &key_nibbles(key))
    }

    /// Sets the value under `key`. `value` must not be empty: an empty value is how Ethereum
    /// spells "absent", so use [`Trie::remove`].
    pub(super) fn insert(&mut self, key: &B256, value: Vec<u8>) -> Result<(), CommitmentError> {
        debug_assert!(!value.is_empty(), "empty trie values are not representable");
        let (root, _) = self
            .ctx
            .insert(mem::take(&mut self.root), &key_nibbles(key), value)?;
        self.root = root;
        Ok(())
    }

    /// Removes `key`; removing an absent key changes nothing.
    pub(super) fn remove(&mut self, key: &B256) -> Result<(), CommitmentError> {
        let (root, _) = self
            .ctx
            .remove(mem::take(&mut self.root), &key_nibbles(key))?;
        self.root = root;
        Ok(())
    }

    /// Encodes and hashes every changed node, hands the new ones to `sink`, and returns the root.
    pub(super) fn commit(self, sink: &mut NodeSink) -> B256 {
        match commit_child(self.root, sink) {
            None => EMPTY_ROOT_HASH,
            Some(NodeRef::Hash(hash)) => hash,
            // The root is referenced by hash however short it is.
            Some(NodeRef::Inline(rlp)) => sink.push(rlp),
        }
    }
}

/// A loaded node and, while unchanged, the hash it was loaded under.
type Opened = (Box<Node>, Option<B256>);

#[derive(Debug)]
struct Ctx<'s, S: ?Sized> {
    store: &'s S,
    /// The root the trie was opened at; names the trie in errors about its structure.
    opened_at: B256,
}

impl<S: NodeStore + ?Sized> Ctx<'_, S> {
    /// Loads the node stored under `hash`, found where `remaining` key nibbles are left.
    fn load(&self, hash: B256, remaining: usize) -> Result<Opened, CommitmentError> {
        let rlp = self
            .store
            .node(&hash)?
            .ok_or(CommitmentError::MissingNode(hash))?;
        let node = decode_node(&rlp, remaining)
            .map_err(|reason| CommitmentError::MalformedNode { hash, reason })?;
        // Only a root can be stored under a hash while shorter than 32 bytes. Were it ever to move
        // below another node it would have to be embedded, so it does not count as clean.
        let clean = (rlp.len() >= 32).then_some(hash);
        Ok((Box::new(node), clean))
    }

    /// The node behind `child`, loading it if needed; `None` for no node.
    fn open(&self, child: Child, remaining: usize) -> Result<Option<Opened>, CommitmentError> {
        match child {
            Child::Empty => Ok(None),
            Child::Stored(hash) => self.load(hash, remaining).map(Some),
            Child::Node { node, clean } => Ok(Some((node, clean))),
        }
    }

    /// The decoder guarantees that every path ends exactly at the key's last nibble, and the
    /// operations below preserve it; this reports a trie where that somehow does not hold.
    fn broken(&self, what: &str) -> CommitmentError {
        CommitmentError::MalformedNode {
            hash: self.opened_at,
            reason: format!("a path in the trie under this root is inconsistent: {what}"),
        }
    }

    fn get(&self, slot: &mut Child, key: &[u8]) -> Result<Option<Vec<u8>>, CommitmentError> {
        if let Child::Stored(hash) = *slot {
            let (node, clean) = self.load(hash, key.len())?;
            *slot = Child::Node { node, clean };
        }
        let Child::Node { node, .. } = slot else {
            return Ok(None);
        };
        match &mut **node {
            Node::Leaf { path, value } => Ok((path[..] == *key).then(|| value.clone())),
            Node::Extension { path, child } => match key.strip_prefix(path.as_slice()) {
                Some(rest) => self.get(child, rest),
                None => Ok(None),
            },
            Node::Branch { children } => {
                let Some((&nibble, rest)) = key.split_first() else {
                    return Err(self.broken("branch past the end of the key"));
                };
                self.get(&mut children[usize::from(nibble)], rest)
            }
        }
    }

    /// Sets `key` (the nibbles still to match below `child`) to `value`. Returns the new child and
    /// whether anything changed.
    fn insert(
        &self,
        child: Child,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(Child, bool), CommitmentError> {
        let Some((node, clean)) = self.open(child, key.len())? else {
            return Ok((
                Child::dirty(Node::Leaf {
                    path: key.to_vec(),
                    value,
                }),
                true,
            ));
        };
        if let Node::Leaf { path, value: old } = &*node {
            if path[..] == *key && *old == value {
                return Ok((Child::Node { node, clean }, false));
            }
        }
        match *node {
            Node::Leaf { path, .. } if path == key => {
                Ok((Child::dirty(Node::Leaf { path, value }), true))
            }
            Node::Leaf {
                mut path,
                value: old,
            } => {
                // Two different keys of equal length part at some nibble before their end; a
                // branch goes there, after an extension for the shared part.
                let common = common_prefix(&path, key);
                let (Some(&old_nibble), Some(&new_nibble)) = (path.get(common), key.get(common))
                else {
                    return Err(self.broken("leaf path and key differ in length"));
                };
                path.drain(..=common);
                let mut children: Box<[Child; 16]> = Box::default();
                children[usize::from(old_nibble)] = Child::dirty(Node::Leaf { path, value: old });
                children[usize::from(new_nibble)] = Child::dirty(Node::Leaf {
                    path: key[common + 1..].to_vec(),
                    value,
                });
                Ok((branch_under(&key[..common], children), true))
            }
            Node::Extension {
                mut path,
                child: next,
            } => {
                let common = common_prefix(&path, key);
                if common == path.len() {
                    let (next, changed) = self.insert(next, &key[common..], value)?;
                    let clean = if changed { None } else { clean };
                    let node = Box::new(Node::Extension { path, child: next });
                    return Ok((Child::Node { node, clean }, changed));
                }
                // The key leaves the extension part-way: a branch goes at the parting nibble,
                // with what is left of the extension on one side and a new leaf on the other.
                let ext_nibble = path[common];
                let Some(&new_nibble) = key.get(common) else {
                    return Err(self.broken("extension runs past the end of the key"));
                };
                let below = if common + 1 == path.len() {
                    next
                } else {
                    path.drain(..=common);
                    Child::dirty(Node::Extension { path, child: next })
                };
                let mut children: Box<[Child; 16]> = Box::default();
                children[usize::from(ext_nibble)] = below;
                children[usize::from(new_nibble)] = Child::dirty(Node::Leaf {
                    path: key[common + 1..].to_vec(),
                    value,
                });
                Ok((branch_under(&key[..common], children), true))
            }
            Node::Branch { mut children } => {
                let Some((&nibble, rest)) = key.split_first() else {
                    return Err(self.broken("branch past the end of the key"));
                };
                let slot = &mut children[usize::from(nibble)];
                let (child, changed) = self.insert(mem::take(slot), rest, value)?;
                *slot = child;
                let clean = if changed { None } else { clean };
                Ok((
                    Child::Node {
                        node: Box::new(Node::Branch { children }),
                        clean,
                    },
                    changed,
                ))
            }
        }
    }

    /// Removes `key` below `child`. Returns the new child and whether anything changed.
    fn remove(&self, child: Child, key: &[u8]) -> Result<(Child, bool), CommitmentError> {
        let Some((node, clean)) = self.open(child, key.len())? else {
            return Ok((Child::Empty, false));
        };
        let unchanged = |node: Node| -> Result<(Child, bool), CommitmentError> {
            Ok((
                Child::Node {
                    node: Box::new(node),
                    clean,
                },
                false,
            ))
        };
        match *node {
            Node::Leaf { path, .. } if path == key => Ok((Child::Empty, true)),
            leaf @ Node::Leaf { .. } => unchanged(leaf),
            Node::Extension { path, child: next } => {
                let Some(rest) = key.strip_prefix(path.as_slice()) else {
                    return unchanged(Node::Extension { path, child: next });
                };
                let (next, changed) = self.remove(next, rest)?;
                if !changed {
                    return unchanged(Node::Extension { path, child: next });
                }
                // The branch below may have collapsed into a leaf or an extension: merge paths.
                Ok((self.prefixed(path, next, rest.len())?, true))
            }
            Node::Branch { mut children } => {
                let Some((&nibble, rest)) = key.split_first() else {
                    return Err(self.broken("branch past the end of the key"));
                };
                let slot = &mut children[usize::from(nibble)];
                let (child, changed) = self.remove(mem::take(slot), rest)?;
                *slot = child;
                if !changed {
                    return unchanged(Node::Branch { children });
                }
                let mut live = children
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !c.is_empty())
                    .map(|(i, _)| i);
                let (first, second) = (live.next(), live.next());
                match (first, second) {
                    // A branch needs two children; one left over moves up into the parent's
                    // place, its path lengthened by its nibble.
                    (Some(only), None) => {
                        let child = mem::take(&mut children[only]);
                        let nibble = vec![only as u8];
                        Ok((self.prefixed(nibble, child, rest.len())?, true))
                    }
                    (None, _) => Ok((Child::Empty, true)),
                    (Some(_), Some(_)) => Ok((Child::dirty(Node::Branch { children }), true)),
                }
            }
        }
    }

    /// `child` (found where `remaining` nibbles are left) with `prefix` put in front of its path:
    /// leaves and extensions absorb the prefix, a branch gets an extension above it.
    fn prefixed(
        &self,
        mut prefix: Vec<u8>,
        child: Child,
        remaining: usize,
    ) -> Result<Child, CommitmentError> {
        let Some((node, clean)) = self.open(child, remaining)? else {
            return Ok(Child::Empty);
        };
        Ok(match *node {
            Node::Leaf { path, value } => {
                prefix.extend(path);
                Child::dirty(Node::Leaf {
                    path: prefix,
                    value,
                })
            }
            Node::Extension { path, child } => {
                prefix.extend(path);
                Child::dirty(Node::Extension {
                    path: prefix,
                    child,
                })
            }
            // The branch itself is unchanged and keeps its hash.
            Node::Branch { children } => {
                let branch = Child::Node {
                    node: Box::new(Node::Branch { children }),
                    clean,
                };
                Child::dirty(Node::Extension {
                    path: prefix,
                    child: branch,
                })
            }
        })
    }
}

/// A new branch, under an extension for `prefix` unless the prefix is empty.
fn branch_under(prefix: &[u8], children: Box<[Child; 16]>) -> Child {
    let branch = Child::dirty(Node::Branch { children });
    if prefix.is_empty() {
        branch
    } else {
        Child::dirty(Node::Extension {
            path: prefix.to_vec(),
            child: branch,
        })
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Encodes the changed nodes under `child`, bottom-up; `None` for no node.
fn commit_child(child: Child, sink: &mut NodeSink) -> Option<NodeRef> {
    let node = match child {
        Child::Empty => return None,
        Child::Stored(hash)
        | Child::Node {
            clean: Some(hash), ..
        } => {
            return Some(NodeRef::Hash(hash));
        }
        Child::Node { node, clean: None } => node,
    };
    let rlp = match *node {
        Node::Leaf { path, value } => encode_leaf(&path, &value),
        // An extension over nothing holds no keys (the operations above never build one).
        Node::Extension { path, child } => encode_extension(&path, &commit_child(child, sink)?),
        Node::Branch { children } => {
            let children: [Child; 16] = *children;
            encode_branch(&children.map(|child| commit_child(child, sink)))
        }
    };
    Some(if rlp.len() < 32 {
        NodeRef::Inline(rlp)
    } else {
        NodeRef::Hash(sink.push(rlp))
    })
}
