//! proptest strategies for every message, with realistic field sizes and within the
//! wire limits, for reuse by any unit test in the crate.

use super::message::{limits, GetHeaders, Hello, InvItem, InvKind, Message, Reject, RejectCode};
use crate::chain::types::{Address, Block, Coinbase, Hash, Header, Sig, Transaction};
use proptest::collection::vec;
use proptest::prelude::*;

/// Any hash.
pub fn arb_hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

/// Any address.
pub fn arb_address() -> impl Strategy<Value = Address> {
    any::<[u8; 32]>().prop_map(Address)
}

/// Any signature (not a valid one: the wire does not care).
pub fn arb_sig() -> impl Strategy<Value = Sig> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Sig(s)
    })
}

/// Mostly small numbers (short varints), sometimes any value (widest varints).
pub fn arb_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1000, any::<u64>()]
}

/// A header with plausible and extreme field values.
pub fn arb_header() -> impl Strategy<Value = Header> {
    (
        prop_oneof![Just(1u32), any::<u32>()],
        arb_hash(),
        arb_hash(),
        prop_oneof![1_793_491_200u64..1_900_000_000, any::<u64>()],
        any::<u32>(),
        any::<u64>(),
        arb_u64(),
    )
        .prop_map(
            |(version, prev, merkle_root, time, bits, nonce, height)| Header {
                version,
                prev,
                merkle_root,
                time,
                bits,
                nonce,
                height,
            },
        )
}

/// A transaction.
pub fn arb_tx() -> impl Strategy<Value = Transaction> {
    (
        arb_address(),
        arb_address(),
        arb_u64(),
        arb_u64(),
        arb_u64(),
        arb_sig(),
    )
        .prop_map(|(from, to, amount, fee, nonce, sig)| Transaction {
            from,
            to,
            amount,
            fee,
            nonce,
            sig,
        })
}

/// A block of up to 20 transactions (main allows 100 in 16 KB).
pub fn arb_block() -> impl Strategy<Value = Block> {
    (
        arb_header(),
        arb_u64(),
        arb_address(),
        arb_u64(),
        vec(arb_tx(), 0..20),
    )
        .prop_map(|(header, height, to, amount, txs)| Block {
            header,
            coinbase: Coinbase { height, to, amount },
            txs,
        })
}

/// An inventory entry.
pub fn arb_inv_item() -> impl Strategy<Value = InvItem> {
    (
        prop_oneof![
            Just(InvKind::Block),
            Just(InvKind::Tx),
            Just(InvKind::CompactBlock)
        ],
        arb_hash(),
    )
        .prop_map(|(kind, hash)| InvItem { kind, hash })
}

/// Up to [`limits::MAX_INV`] inventory entries, usually few.
pub fn arb_inv() -> impl Strategy<Value = Vec<InvItem>> {
    prop_oneof![
        4 => vec(arb_inv_item(), 0..8),
        1 => vec(arb_inv_item(), 0..=limits::MAX_INV),
    ]
}

/// A valid callsign: empty or `[A-Z0-9-]{1,9}`.
pub fn arb_callsign() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[A-Z0-9]{3,6}(-[0-9]{1,2})?",
        "[A-Z0-9-]{1,9}"
    ]
}

/// A `Hello`.
pub fn arb_hello() -> impl Strategy<Value = Hello> {
    (
        (any::<u16>(), any::<[u8; 4]>(), arb_u64(), arb_hash()),
        (
            any::<u128>(),
            any::<[u8; 32]>(),
            arb_callsign(),
            any::<u64>(),
            any::<u64>(),
            // Up to 16 chars of up to 4 UTF-8 bytes each: within MAX_USER_AGENT (64).
            "\\PC{0,16}",
        ),
    )
        .prop_map(
            |(
                (version, network, height, tip),
                (work, node_id, callsign, features, nonce, user_agent),
            )| Hello {
                version,
                network,
                height,
                tip,
                work,
                node_id,
                callsign,
                features,
                nonce,
                user_agent,
            },
        )
}

/// A `GetHeaders`.
pub fn arb_get_headers() -> impl Strategy<Value = GetHeaders> {
    (
        vec(arb_hash(), 1..=limits::MAX_LOCATOR),
        proptest::option::of(arb_hash()),
        any::<u16>(),
    )
        .prop_map(|(locator, stop, max)| GetHeaders { locator, stop, max })
}

/// A `Reject`.
pub fn arb_reject() -> impl Strategy<Value = Reject> {
    let code = prop_oneof![
        Just(RejectCode::Malformed),
        Just(RejectCode::Invalid),
        Just(RejectCode::WrongNetwork),
        Just(RejectCode::Version),
        Just(RejectCode::Protocol),
        Just(RejectCode::Duplicate),
        Just(RejectCode::RateLimited),
    ];
    // 40 chars of up to 4 bytes: within MAX_REASON (160).
    (code, "\\PC{0,40}", proptest::option::of(arb_hash())).prop_map(|(code, reason, about)| {
        Reject {
            code,
            reason,
            about,
        }
    })
}

/// Any message, every variant equally likely.
pub fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_hello().prop_map(Message::Hello),
        any::<u64>().prop_map(Message::Ping),
        any::<u64>().prop_map(Message::Pong),
        arb_inv().prop_map(Message::Inv),
        arb_inv().prop_map(Message::GetData),
        arb_get_headers().prop_map(Message::GetHeaders),
        vec(arb_header(), 0..40).prop_map(Message::Headers),
        arb_block().prop_map(Message::Block),
        arb_tx().prop_map(Message::Tx),
        arb_inv().prop_map(Message::NotFound),
        arb_reject().prop_map(Message::Reject),
        prop_oneof![
            4 => vec(arb_u64(), 0..8),
            1 => vec(any::<u64>(), 0..=limits::MAX_ACK_IDS),
        ]
        .prop_map(Message::Ack),
        (arb_block(), vec(any::<[u8; 6]>(), 0..50)).prop_map(|(b, short_ids)| {
            Message::CompactBlock(super::message::CompactBlock {
                header: b.header,
                coinbase: b.coinbase,
                short_ids,
            })
        }),
        (any::<[u8; 32]>(), vec(any::<u16>(), 0..50)).prop_map(|(h, indexes)| {
            Message::GetBlockTxn(super::message::GetBlockTxn {
                block: crate::chain::types::Hash(h),
                indexes,
            })
        }),
        Just(Message::GetAddr),
        vec("[0-9.:]{1,21}", 0..8).prop_map(Message::Addr),
        (
            any::<u64>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            proptest::option::of(any::<[u8; 32]>())
        )
            .prop_map(|(seen, nonce, s1, s2, mac)| {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&s1);
                sig[32..].copy_from_slice(&s2);
                Message::Auth(super::message::Auth {
                    seen,
                    nonce,
                    sig: crate::chain::types::Sig(sig),
                    mac,
                })
            }),
        (any::<[u8; 32]>(), vec(arb_tx(), 0..5)).prop_map(|(h, txs)| {
            Message::BlockTxn(super::message::BlockTxn {
                block: crate::chain::types::Hash(h),
                txs,
            })
        }),
    ]
}
