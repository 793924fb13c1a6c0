//! KECCAK256 with a memo of recent short inputs. Contracts hash the same 64 bytes again and
//! again: a mapping's slot is `keccak(key ‖ slot)`, and Solidity works it out afresh for every
//! read and write of `balances[from]`, so an ERC-20 transfer hashes two inputs four times. Each
//! hash is a Keccak-f permutation, two fifths of such a transaction's instructions. The memo
//! answers repeats from a small table instead; it is keyed on the whole input, so the result
//! is the hash itself, and gas and memory are charged exactly as revm's instruction does.

use alloy_primitives::{keccak256, B256};
use revm::{
    bytecode::opcode::KECCAK256,
    context_interface::{cfg::gas, Host},
    handler::instructions::EthInstructions,
    interpreter::{
        instructions::system, interpreter::num_words, interpreter_types::InterpreterTypes,
        interpreter_types::MemoryTr, interpreter_types::StackTr, Instruction, InstructionContext,
        InstructionExecResult, InstructionResult,
    },
};
use std::cell::RefCell;

/// Inputs up to this long are remembered: a mapping slot's key and slot, or two words.
const MAX_INPUT: usize = 64;

/// Entries in a thread's memo: room for the hashes of one transaction, and then some. Small
/// enough to stay in the first-level cache beside the interpreter's own data.
const ENTRIES: usize = 256;

#[derive(Clone, Copy)]
struct Entry {
    /// 0 for an empty entry (an empty input is not hashed: its hash is a constant).
    len: u8,
    input: [u8; MAX_INPUT],
    hash: B256,
}

/// A direct-mapped table of recent inputs and their hashes, one per thread: workers never
/// share one, and a transaction runs on one thread at a time.
struct Memo(Box<[Entry]>);

impl Memo {
    fn new() -> Self {
        let empty = Entry {
            len: 0,
            input: [0; MAX_INPUT],
            hash: B256::ZERO,
        };
        Memo(vec![empty; ENTRIES].into_boxed_slice())
    }

    /// The hash of `input` (1 to [`MAX_INPUT`] bytes), from the table or worked out and kept.
    fn hash(&mut self, input: &[u8]) -> B256 {
        let entry = &mut self.0[slot(input)];
        if usize::from(entry.len) == input.len() && entry.input[..input.len()] == *input {
            return entry.hash;
        }
        let hash = keccak256(input);
        entry.len = input.len() as u8;
        entry.input[..input.len()].copy_from_slice(input);
        entry.hash = hash;
        hash
    }
}

/// The table entry for `input`: a multiplicative hash of its words. The first word of a mapping
/// key is its zero padding or high bytes; the words are mixed so that keys differing anywhere
/// spread out.
fn slot(input: &[u8]) -> usize {
    let mut h = input.len() as u64;
    for chunk in input.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    (h >> 32) as usize % ENTRIES
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::new());
}

/// Replaces revm's KECCAK256 in `instructions` with [`keccak256_memo`], same static gas.
pub(crate) fn install<W: InterpreterTypes, H: Host>(instructions: &mut EthInstructions<W, H>) {
    instructions.insert_instruction(
        KECCAK256,
        Instruction::new(keccak256_memo),
        gas::KECCAK256 as u16,
    );
}

/// The KECCAK256 instruction. An input of at most [`MAX_INPUT`] bytes that lies in memory
/// already expanded (the usual case: the contract has just written it there) is hashed through
/// the memo; anything else goes to revm's own instruction. Both charge the same gas: the
/// static part from the gas table, the per-word part here, and no expansion.
fn keccak256_memo<W: InterpreterTypes, H: Host + ?Sized>(
    context: InstructionContext<'_, H, W>,
) -> InstructionExecResult {
    let interpreter = &mut *context.interpreter;
    let stack = interpreter.stack.data();
    let Some(&[len, offset]) = stack.len().checked_sub(2).map(|at| &stack[at..]) else {
        return system::keccak256(context);
    };
    let (Ok(offset), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
        return system::keccak256(context);
    };
    let expanded = interpreter.gas.memory().words_num;
    let fits = (1..=MAX_INPUT).contains(&len)
        && offset
            .checked_add(len)
            .is_some_and(|end| num_words(end) <= expanded && end <= interpreter.memory.size());
    if !fits {
        return system::keccak256(context);
    }
    if !interpreter
        .gas
        .record_regular_cost(context.host.gas_params().keccak256_cost(len))
    {
        return Err(InstructionResult::OutOfGas);
    }
    let hash = MEMO.with(|memo| {
        memo.borrow_mut()
            .hash(&interpreter.memory.slice_len(offset, len))
    });
    let Some(([_], top)) = interpreter.stack.popn_top::<1>() else {
        unreachable!("two stack items were read above");
    };
    *top = hash.into();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_hashes_are_the_hashes_of_their_inputs() {
        let mut memo = Memo::new();
        let inputs: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| {
                let len = 1 + (i as usize * 7) % MAX_INPUT;
                (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
            })
            .collect();
        // Twice over, so that the second pass meets both kept and evicted entries.
        for _ in 0..2 {
            for input in &inputs {
                assert_eq!(memo.hash(input), keccak256(input));
            }
        }
        // Inputs that are prefixes of one another, or differ only in length, stay apart.
        let long = [7u8; MAX_INPUT];
        for len in 1..=MAX_INPUT {
            assert_eq!(memo.hash(&long[..len]), keccak256(&long[..len]));
        }
    }
}
