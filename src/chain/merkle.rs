//! Binary merkle tree over transaction ids.
//!
//! Leaves and inner nodes are hashed with distinct prefixes (0x00, 0x01) so an inner node
//! can never be passed off as a leaf. An odd node at the end of a level is carried up
//! unchanged instead of being paired with itself, which rules out Bitcoin's duplicate-leaf
//! ambiguity (CVE-2012-2459): two different leaf lists never share a root.

use super::types::Hash;

fn leaf(id: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0x00]);
    h.update(&id.0);
    Hash(*h.finalize().as_bytes())
}

fn node(l: &Hash, r: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0x01]);
    h.update(&l.0);
    h.update(&r.0);
    Hash(*h.finalize().as_bytes())
}

/// Merkle root of `ids` in order; the root of no ids is [`Hash::ZERO`].
pub fn root(ids: &[Hash]) -> Hash {
    if ids.is_empty() {
        return Hash::ZERO;
    }
    let mut level: Vec<Hash> = ids.iter().map(leaf).collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [l, r] => next.push(node(l, r)),
                [single] => next.push(*single),
                _ => unreachable!("chunks(2) yields one or two items"),
            }
        }
        level = next;
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(i: u8) -> Hash {
        Hash([i; 32])
    }

    #[test]
    fn single_leaf_is_hashed_leaf() {
        assert_eq!(root(&[h(1)]), leaf(&h(1)));
        assert_ne!(root(&[h(1)]), h(1));
    }

    #[test]
    fn three_leaves_carry_the_odd_one_up() {
        let expect = node(&node(&leaf(&h(1)), &leaf(&h(2))), &leaf(&h(3)));
        assert_eq!(root(&[h(1), h(2), h(3)]), expect);
    }

    #[test]
    fn duplicated_last_leaf_changes_root() {
        assert_ne!(root(&[h(1), h(2), h(3)]), root(&[h(1), h(2), h(3), h(3)]));
    }

    proptest! {
        #[test]
        fn any_change_of_a_leaf_changes_the_root(
            ids in proptest::collection::vec(any::<[u8; 32]>(), 1..40),
            idx in any::<prop::sample::Index>(),
            flip in 0u8..32,
        ) {
            let ids: Vec<Hash> = ids.into_iter().map(Hash).collect();
            let i = idx.index(ids.len());
            let mut changed = ids.clone();
            changed[i].0[flip as usize] ^= 0x01;
            prop_assert_ne!(root(&ids), root(&changed));
        }

        #[test]
        fn order_matters(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            prop_assume!(a != b);
            prop_assert_ne!(root(&[Hash(a), Hash(b)]), root(&[Hash(b), Hash(a)]));
        }
    }
}
